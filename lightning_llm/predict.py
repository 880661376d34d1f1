"""`llm-predict`: an encoder's predictions for a file, no training split needed.

Token classification: sentences (JSONL/JSON with a list-of-words column, or text lines split on whitespace) -> JSONL
`{"words", "tags"}`. Extractive QA: SQuAD-format questions (JSON/JSONL, or the official nested JSON) -> run_qa's
predictions JSON `{id: answer}`. Sequence classification: text lines, CSV/TSV or JSONL -> JSONL `{"text", "label",
"probability"}`. The model is a .ckpt, a run directory or an exported HF model directory; the answer spans come from
the same post-processing as evaluation (`SquadMetric`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedModel

from lightning_llm.config import CONFIG_PATH
from lightning_llm.data.padding import PaddingCollator, auto_pad_multiple
from lightning_llm.data.question_answering import QACollator, read_nested_squad
from lightning_llm.errors import UserError, require
from lightning_llm.modules.question_answering import SquadMetric
from lightning_llm.runtime.cli import launch, run_or_exit
from lightning_llm.runtime.console import hf_progress_bars_off
from lightning_llm.runtime.model_paths import Accepts, load_model_path
from lightning_llm.runtime.process_exit import as_process
from lightning_llm.utils.io import write_json_atomic, write_text_atomic

ACCEPTS = Accepts(("token_classification", "question_answering", "classification"),
                  "llm-predict takes token classification, extractive QA or sequence classification models")
_QA_SETTINGS = {"n_best_size": 20, "max_answer_length": 30, "null_score_diff_threshold": 0.0,
                "version_2_with_negative": False}


# ----------------------------------------------------------------------------------------------- loading
def load_for_prediction(model_path: str, trust_remote_code: bool = False) -> tuple[PreTrainedModel, Any, str, dict]:
    """(HF model in eval mode, tokenizer, task, settings) of any `model_path=` form. `settings` holds what the run
    knew, so that predictions match its evaluation: the data's max_length/doc_stride and QA post-processing from
    its saved config, a checkpoint's own hyper-parameters over those."""
    loaded = load_model_path(model_path, ACCEPTS, trust_remote_code)
    own = {k: loaded.hparams[k] for k in _QA_SETTINGS if loaded.hparams.get(k) is not None}
    settings = _run_settings(loaded.run_dir) if loaded.run_dir is not None else {}
    return loaded.model, loaded.tokenizer, loaded.task, {**settings, **own}


def _run_settings(run_dir: Path) -> dict[str, Any]:
    """max_length/doc_stride (and QA's post-processing) of the run that trained the model, from its saved config."""
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        return {}
    saved = OmegaConf.load(path)
    out = {}
    for group, keys in (("data", ("max_length", "doc_stride", "version_2_with_negative")),
                        ("model", ("n_best_size", "max_answer_length", "null_score_diff_threshold"))):
        node = saved.get(group) or {}
        for key in keys:
            value = OmegaConf.select(node, key, default=None) if OmegaConf.is_config(node) else None
            if isinstance(value, (int, float, bool)):
                out[key] = value
    return out


# ----------------------------------------------------------------------------------------------- reading input
def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file, a JSON list of objects, the official nested SQuAD JSON or a CSV/TSV file."""
    require(path.is_file(), f"input_file: file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
    if suffix == ".json":
        nested = read_nested_squad(str(path))
        if nested is not None:
            return nested
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            doc = None
        if isinstance(doc, list) and all(isinstance(r, dict) for r in doc):
            return doc
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"input_file: {path}:{number} is not a JSON object ({err.msg})") from err
        require(isinstance(row, dict), f"input_file: {path}:{number} is not a JSON object")
        rows.append(row)
    return rows


def _column(rows: list[dict[str, Any]], key: str, column: str, path: Path) -> list[Any]:
    missing = next((i for i, row in enumerate(rows) if column not in row), None)
    require(missing is None, f"{key}={column!r} is not a column of {path} (row {missing} has "
                             f"{', '.join(map(str, rows[missing].keys())) if missing is not None else ''})")
    return [row[column] for row in rows]


def _text_lines(path: Path) -> list[str]:
    require(path.is_file(), f"input_file: file not found: {path}")
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _model_max_length(model: PreTrainedModel, tokenizer: Any, configured: int | None) -> int:
    limit = getattr(model.config, "max_position_embeddings", None) or 512
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if tok_limit and tok_limit < 1_000_000:
        limit = min(limit, tok_limit)
    return min(configured, limit) if configured else min(limit, 512)


# ----------------------------------------------------------------------------------------------- tasks
def predict_tags(model: PreTrainedModel, tokenizer: Any, sentences: list[list[str]], max_length: int,
                 batch_size: int, device: str) -> list[dict[str, Any]]:
    """Each word's tag from its first sub-word, as evaluation reads it. A sentence longer than max_length is split
    into consecutive windows (overflowing tokens), so every word gets a tag."""
    names = model.config.id2label
    pad = PaddingCollator(tokenizer, auto_pad_multiple())
    records = []
    for batch in _batches(sentences, batch_size):
        enc = tokenizer([list(map(str, words)) for words in batch], is_split_into_words=True, truncation=True,
                        max_length=max_length, return_overflowing_tokens=True)
        owner = enc.pop("overflow_to_sample_mapping")
        features = [{k: enc[k][i] for k in enc.keys() if k in ("input_ids", "attention_mask", "token_type_ids")}
                    for i in range(len(owner))]
        tensors = {k: v.to(device) for k, v in pad(features).items()}
        with torch.inference_mode():
            predicted = model(**tensors).logits.argmax(-1).tolist()
        tags: list[list[str | None]] = [[None] * len(words) for words in batch]
        for i, row in enumerate(owner):
            previous = None
            for position, word in enumerate(enc.word_ids(i)):
                if word is not None and word != previous and tags[row][word] is None:
                    tags[row][word] = names[predicted[i][position]]
                previous = word
        for words, row_tags in zip(batch, tags):
            # A word the tokenizer drops entirely (e.g. a control character) has no sub-word: tagged O.
            records.append({"words": list(words), "tags": [t if t is not None else "O" for t in row_tags]})
    return records


def predict_answers(model: PreTrainedModel, tokenizer: Any, rows: list[dict[str, Any]], cfg: DictConfig,
                    settings: dict[str, Any], device: str) -> dict[str, str]:
    """run_qa's predictions: doc-stride windows as evaluation builds them, answers by `SquadMetric`'s n-best
    post-processing over all windows of a question (SQuAD v2.0's null-score rule when the model was trained so)."""
    path = Path(cfg.input_file)
    questions = [str(q or "").lstrip() for q in _column(rows, "question_column", cfg.question_column, path)]
    contexts = [str(c or "") for c in _column(rows, "context_column", cfg.context_column, path)]
    ids = [str(row.get(cfg.id_column, i)) for i, row in enumerate(rows)]
    post = {k: cfg[k] if cfg.get(k) is not None else settings.get(k, default) for k, default in _QA_SETTINGS.items()}
    max_length = _model_max_length(model, tokenizer, cfg.max_length or settings.get("max_length") or 384)
    stride = cfg.doc_stride if cfg.doc_stride is not None else settings.get("doc_stride", 128)
    require(stride < max_length, f"doc_stride={stride} must be below max_length={max_length}")
    metric = SquadMetric(**post).to(device)
    collate = QACollator(tokenizer, auto_pad_multiple())
    for start in range(0, len(rows), cfg.batch_size):
        part = range(start, min(start + cfg.batch_size, len(rows)))
        enc = tokenizer([questions[i] for i in part], [contexts[i] for i in part], truncation="only_second",
                        max_length=max_length, stride=stride, return_overflowing_tokens=True,
                        return_offsets_mapping=True)
        features = []
        for f, row in enumerate(enc["overflow_to_sample_mapping"]):
            seq, ids_f = enc.sequence_ids(f), enc["input_ids"][f]
            index = part[row]
            feature = {k: enc[k][f] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
            feature.update({
                "example_index": index,
                "cls_index": ids_f.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in ids_f else 0,
                "offset_start": [o[0] if s == 1 else -1 for o, s in zip(enc["offset_mapping"][f], seq)],
                "offset_end": [o[1] if s == 1 else -1 for o, s in zip(enc["offset_mapping"][f], seq)],
                "example_id": ids[index], "question": questions[index], "context": contexts[index], "answers": []})
            features.append(feature)
        for chunk in _batches(features, cfg.batch_size):
            batch = collate([dict(f) for f in chunk])
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
            with torch.inference_mode():
                out = model(**inputs)
            metric.update(out.start_logits, out.end_logits, batch)
    return {r["id"]: r["prediction"] for r in metric.records().values()}


def predict_labels(model: PreTrainedModel, tokenizer: Any, texts: list[str], max_length: int, batch_size: int,
                   device: str) -> list[dict[str, Any]]:
    """The most probable label of each text and its softmax probability."""
    names = model.config.id2label
    pad = PaddingCollator(tokenizer, auto_pad_multiple())
    records = []
    for batch in _batches(texts, batch_size):
        enc = tokenizer(list(batch), truncation=True, max_length=max_length)
        features = [{k: enc[k][i] for k in enc.keys()} for i in range(len(batch))]
        tensors = {k: v.to(device) for k, v in pad(features).items()}
        with torch.inference_mode():
            probs = model(**tensors).logits.float().softmax(-1)
        best, label = probs.max(-1)
        records += [{"text": t, "label": names[int(i)], "probability": float(p)}
                    for t, i, p in zip(batch, label.tolist(), best.tolist())]
    return records


# ----------------------------------------------------------------------------------------------- entry point
def _sentences(cfg: DictConfig) -> list[list[str]]:
    path = Path(cfg.input_file)
    if path.suffix.lower() in (".jsonl", ".json"):
        words = _column(read_rows(path), "tokens_column", cfg.tokens_column, path)
        bad = next((i for i, w in enumerate(words) if not isinstance(w, list)), None)
        require(bad is None, f"tokens_column={cfg.tokens_column!r} must hold a list of words per row, row {bad} of "
                             f"{path} has {type(words[bad]).__name__ if bad is not None else ''}")
        return words
    return [line.split() for line in _text_lines(path)]


def _texts(cfg: DictConfig) -> list[str]:
    path = Path(cfg.input_file)
    if path.suffix.lower() in (".jsonl", ".json", ".csv", ".tsv"):
        return [str(t) for t in _column(read_rows(path), "text_column", cfg.text_column, path)]
    return _text_lines(path)


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Check settings, load, predict and write `output_file`; returns {task, output_file, count}."""
    require(not OmegaConf.is_missing(cfg, "model_path") and bool(cfg.model_path),
            "model_path: required (a .ckpt file, a run directory or an HF model directory)")
    require(not OmegaConf.is_missing(cfg, "input_file") and bool(cfg.input_file), "input_file: required")
    require(isinstance(cfg.batch_size, int) and cfg.batch_size >= 1, f"batch_size must be an integer >= 1, "
                                                                     f"got {cfg.batch_size!r}")
    require(Path(cfg.input_file).is_file(), f"input_file: file not found: {cfg.input_file}")
    with hf_progress_bars_off():
        model, tokenizer, task, settings = load_for_prediction(str(cfg.model_path), bool(cfg.trust_remote_code))
    require(getattr(tokenizer, "is_fast", False) or task == "classification",
            f"model_path: {type(tokenizer).__name__} is not a fast tokenizer (word_ids/offsets needed for {task})")
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    max_length = _model_max_length(model, tokenizer, cfg.max_length or settings.get("max_length"))
    if task == "token_classification":
        sentences = _sentences(cfg)
        require(bool(sentences), f"input_file: no sentences in {cfg.input_file}")
        result: Any = predict_tags(model, tokenizer, sentences, max_length, cfg.batch_size, device)
    elif task == "question_answering":
        rows = read_rows(Path(cfg.input_file))
        require(bool(rows), f"input_file: no questions in {cfg.input_file}")
        result = predict_answers(model, tokenizer, rows, cfg, settings, device)
    else:
        texts = _texts(cfg)
        require(bool(texts), f"input_file: no texts in {cfg.input_file}")
        result = predict_labels(model, tokenizer, texts, max_length, cfg.batch_size, device)
    output = Path(cfg.output_file) if cfg.output_file else \
        Path(cfg.paths.output_dir) / ("predictions.json" if task == "question_answering" else "predictions.jsonl")
    if isinstance(result, dict):
        write_json_atomic(output, result)
    else:
        write_text_atomic(output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result))
    print(f"wrote {len(result)} {task} prediction(s) to {output}")
    return {"task": task, "output_file": str(output), "count": len(result)}


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="predict")
def _main(cfg: DictConfig) -> None:
    run_or_exit(predict, cfg)


def main() -> None:
    launch(_main, "predict")


run = as_process(main)  # the console script

if __name__ == "__main__":
    run()
