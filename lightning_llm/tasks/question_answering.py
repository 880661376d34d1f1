"""Extractive question answering (SQuAD format): doc-stride windows over each context, n-best span post-processing
over all windows of a question (run_qa), the official SQuAD EM/F1 (and v2.0's no-answer rule).

Extractive question answering data: SQuAD-format questions, contexts and answer spans, split into doc-stride
windows (features) the way transformers' run_qa prepares them.

Extractive question answering: an encoder with a start/end span head; answers rebuilt over all doc-stride
windows of a question (n-best post-processing, as transformers' run_qa) and scored with SQuAD v1.1's exact match
and F1 over questions, not windows.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, DatasetDict
from omegaconf import DictConfig
from torch import nn
from torchmetrics import MeanMetric, Metric
from torchmetrics.utilities import dim_zero_cat
from transformers import AutoModelForQuestionAnswering, PreTrainedModel

from lightning_llm import registry
from lightning_llm.config.schema import NonNegative, Positive, UnitFraction
from lightning_llm.data.base import CachedTextDataModule, arrow_column
from lightning_llm.data.padding import PaddingCollator, auto_pad_multiple
from lightning_llm.data.sources import load_raw, require_nonempty, stable_hash
from lightning_llm.errors import UserError, require
from lightning_llm.modules.base import HFTaskModule
from lightning_llm.runtime.inputs import batches, file_column, model_max_length, read_rows
from lightning_llm.utils.io import write_json_atomic
from lightning_llm.utils.text_states import decode_objects, encode_objects

# Keys of an evaluation batch that are not model inputs (QACollator):
# tensors `example_index` (the question's row), `cls_index` (the [CLS] token: the null answer), `offset_start`/
# `offset_end` (character offsets of the context tokens, -1 for question, special and padding tokens); lists `example_id`,
# `question`, `context` and `answers` (gold texts), per feature.
TEXT_KEYS = ("example_id", "question", "context", "answers")
EVAL_KEYS = ("example_index", "cls_index", "offset_start", "offset_end", *TEXT_KEYS)

# ----------------------------------------------------------------------------------------------- SQuAD v1.1 / v2.0
# A transcription of the official evaluation scripts (evaluate-v1.1.py, evaluate-v2.0.py; `evaluate`'s squad and
# squad_v2 metrics wrap the same code but load it from the hub, which runs here offline are not allowed to reach).
_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD's official normalisation (the same in v1.1 and v2.0): lower case, no punctuation, no articles
    (a/an/the), single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match_score(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def f1_score(prediction: str, truth: str) -> float:
    """Token-overlap F1 of the normalised answers (the official v1.1 script's)."""
    pred, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def f1_score_v2(prediction: str, truth: str) -> float:
    """v2.0's F1: as v1.1's, except that an empty answer (no answer) against an empty one scores 1."""
    pred, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    if not pred or not gold:
        return float(pred == gold)
    return f1_score(prediction, truth)


def squad_scores(predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean over questions of the best EM and F1 against any gold answer, as fractions in [0, 1] (the official
    script prints them x100). A question without gold answers is scored against the empty answer."""
    if not predictions:
        return {"exact_match": 0.0, "f1": 0.0}
    em = f1 = 0.0
    for prediction, answers in zip(predictions, golds):
        answers = list(answers) or [""]
        em += max(exact_match_score(prediction, a) for a in answers)
        f1 += max(f1_score(prediction, a) for a in answers)
    return {"exact_match": em / len(predictions), "f1": f1 / len(predictions)}


def squad_v2_scores(predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> dict[str, float]:
    """evaluate-v2.0.py's `exact`/`f1` (here `exact_match`/`f1`, fractions in [0, 1]) over all questions and over
    the answerable (`HasAns_`) and unanswerable (`NoAns_`) ones, with their counts (`*_total`). A question is
    unanswerable when none of its gold answers survives normalisation; it is then scored against the empty answer,
    so predicting "" is right. The best-threshold figures (`best_exact`, ...) need no-answer probabilities and are
    not computed."""
    exact, f1, has_answer = [], [], []
    for prediction, answers in zip(predictions, golds):
        answers = [a for a in answers if normalize_answer(a)] or [""]
        has_answer.append(answers != [""])
        exact.append(max(exact_match_score(prediction, a) for a in answers))
        f1.append(max(f1_score_v2(prediction, a) for a in answers))
    out: dict[str, float] = {"exact_match": sum(exact) / max(1, len(exact)), "f1": sum(f1) / max(1, len(f1)),
                             "total": float(len(exact))}
    for prefix, wanted in (("HasAns", True), ("NoAns", False)):
        rows = [i for i, has in enumerate(has_answer) if has == wanted]
        if rows:
            out[f"{prefix}_exact_match"] = sum(exact[i] for i in rows) / len(rows)
            out[f"{prefix}_f1"] = sum(f1[i] for i in rows) / len(rows)
        out[f"{prefix}_total"] = float(len(rows))
    return out


def read_nested_squad(path: str) -> list[dict[str, Any]] | None:
    """The rows of an official SQuAD JSON file (`{"data": [{"paragraphs": [{"context", "qas"}]}]}`), flattened to
    `id`/`question`/`context`/`answers`; None when the file is not one (JSON lines, a flat JSON list...)."""
    with open(path, encoding="utf-8") as f:
        head = f.read(1).lstrip() or f.read(64).lstrip()[:1]
        if head != "{":
            return None
        f.seek(0)
        try:
            doc = json.load(f)
        except json.JSONDecodeError:  # JSON lines
            return None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        return None
    rows = []
    for article in doc["data"]:
        for par in article.get("paragraphs", []):
            for qa in par.get("qas", []):
                answers = qa.get("answers", [])
                rows.append({"id": str(qa.get("id", len(rows))), "question": qa["question"], "context": par["context"],
                             "answers": {"text": [a["text"] for a in answers],
                                         "answer_start": [int(a["answer_start"]) for a in answers]}})
    return rows


def encode_windows(tok: Any, questions: Sequence[str | None], contexts: Sequence[str | None],
                   answers: Sequence[Mapping[str, Any]], row_ids: Sequence[Any], indices: Sequence[int],
                   max_length: int, doc_stride: int, keep_text: bool) -> dict[str, list]:
    """Doc-stride windows of (question, context) pairs with their answer span positions (the CLS token where the
    answer is not inside a window), and with `keep_text` what post-processing needs (offsets of the context tokens,
    the example it came from, the gold answers). One encoding for training, evaluation and llm-predict."""
    stripped = [(q or "").lstrip() for q in questions]
    contexts = [c or "" for c in contexts]
    out = tok(stripped, contexts, truncation="only_second", max_length=max_length, stride=doc_stride,
              return_overflowing_tokens=True, return_offsets_mapping=True, padding=False)
    sample_map = out.pop("overflow_to_sample_mapping")
    offsets_all = out.pop("offset_mapping")
    starts, ends, ex_index, cls_index, off_s, off_e, ctx, gold, qids, qs = ([] for _ in range(10))
    for i, offsets in enumerate(offsets_all):
        ids = out["input_ids"][i]
        cls = ids.index(tok.cls_token_id) if tok.cls_token_id in ids else 0
        seq = out.sequence_ids(i)
        row = sample_map[i]
        context_tokens = [j for j, s in enumerate(seq) if s == 1]
        answer = answers[row]
        start_token = end_token = cls
        if answer["answer_start"] and context_tokens:
            start_char = int(answer["answer_start"][0])
            end_char = start_char + len(answer["text"][0])
            first, last = context_tokens[0], context_tokens[-1]
            if offsets[first][0] <= start_char and offsets[last][1] >= end_char:
                # the last context token starting at or before the answer, the first ending at or after it
                start_token = max(j for j in context_tokens if offsets[j][0] <= start_char)
                end_token = min(j for j in context_tokens if offsets[j][1] >= end_char)
        starts.append(start_token)
        ends.append(end_token)
        if keep_text:
            ex_index.append(indices[row])
            cls_index.append(cls)
            qids.append(str(row_ids[row]))
            qs.append(questions[row] or "")
            off_s.append([o[0] if s == 1 else -1 for o, s in zip(offsets, seq)])
            off_e.append([o[1] if s == 1 else -1 for o, s in zip(offsets, seq)])
            ctx.append(contexts[row])
            gold.append([str(t) for t in answer["text"]])
    out["start_positions"], out["end_positions"] = starts, ends
    if keep_text:
        out.update({"example_index": ex_index, "cls_index": cls_index, "offset_start": off_s, "offset_end": off_e,
                    "example_id": qids, "question": qs, "context": ctx, "answers": gold})
    return dict(out)


class QACollator:
    """Pads features on the right (`PaddingCollator`); training batches hold only model inputs (with
    `start_positions`/`end_positions`), evaluation batches also the post-processing keys: `example_index` and
    `cls_index` and `offset_start`/`offset_end` tensors (character offsets of context tokens, -1 elsewhere and in
    padding), and `id`/`question`/`context`/`answers` as Python lists (one per feature; Lightning moves the tensors and leaves the lists)."""

    def __init__(self, tokenizer: Any, pad_to_multiple_of: int | None = None) -> None:
        self.pad = PaddingCollator(tokenizer, pad_to_multiple_of=pad_to_multiple_of)
        self.pad.left = False  # question first, context second, padding after: the offsets stay aligned
        self.pad.pad_values.update({"offset_start": -1, "offset_end": -1})

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        texts = {key: [f.pop(key) for f in features] for key in TEXT_KEYS if key in features[0]}
        batch = self.pad(features)
        batch.update(texts)
        return batch


def _row_named(ds: Dataset, index: int) -> str:
    """`row 7, id '5733be28'`: the row number and, when the data has one, its id (what a user searches the file
    for; a row number alone is off by the header or nesting of the file they hold)."""
    row_id = ds[index]["id"] if "id" in ds.column_names else None
    return f"row {index}" + (f", id {str(row_id)!r}" if row_id is not None else "")


class QuestionAnsweringDataModule(CachedTextDataModule):
    """SQuAD-format rows: `question`, `context`, `answers` ({"text": [...], "answer_start": [...]}) and an optional
    `id`, from the hub, local JSON/JSONL/parquet, or the official nested SQuAD JSON.

    Each (question, context) pair is tokenized with `truncation="only_second"` into windows of `max_length` tokens
    overlapping by `doc_stride` tokens. Every feature gets `start_positions`/`end_positions`: the tokens of the
    first gold answer, or the [CLS] token when the answer is not inside that window (as run_qa). Validation and test
    features also keep `example_index` (their row), the [CLS] position, the character offsets of their context
    tokens and the row's id, question, context and gold answers, so the module can rebuild answer text over all
    windows of a row, score it and write it out.

    `version_2_with_negative` (SQuAD v2.0) allows questions without an answer (empty `answers.text`), trained to
    point at [CLS]; the module then predicts "no answer" by run_qa's null-score rule and scores with SQuAD v2.0.
    Without it a row without an answer is an error (the v1.1 scorer cannot grade it).
    """

    objectives = frozenset({"question_answering"})
    needs_fast_tokenizer = "offset mapping"
    _bundled = {"train": "qa_train.jsonl", "validation": "qa_validation.jsonl", "test": "qa_test.jsonl"}

    def __init__(self, *, question_column: str = "question", context_column: str = "context",
                 answers_column: str = "answers", max_length: Positive[int] = 384,
                 doc_stride: NonNegative[int] = 128,
                 version_2_with_negative: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.question_column, self.context_column, self.answers_column = question_column, context_column, \
            answers_column
        self.max_length, self.doc_stride = max_length, doc_stride
        self.version_2_with_negative = version_2_with_negative
        self.baseline: dict[str, float | None] = {"f1": None, "exact_match": None}
        self.counts: dict[str, Any] = {}
        self.collate_fn = None  # set once a tokenizer is known (see setup)

    def model_kwargs(self) -> dict[str, Any]:
        """The first-sentence baseline (EM/F1 on validation) the module reports its scores against, and whether
        questions may have no answer (SQuAD v2.0 post-processing and scoring)."""
        return {"baseline_f1": self.baseline["f1"], "baseline_exact_match": self.baseline["exact_match"],
                "version_2_with_negative": self.version_2_with_negative}

    def _processing_params(self) -> dict[str, Any]:
        return {"question": self.question_column, "context": self.context_column, "answers": self.answers_column,
                "max_length": self.max_length, "doc_stride": self.doc_stride, "version": 2,
                "version_2_with_negative": self.version_2_with_negative}

    # ----------------------------------------------------------------- raw data
    def load_raw(self) -> DatasetDict:
        """Official nested SQuAD JSON files are flattened (to JSONL beside the cache) first; the rest is the base's."""
        given = {split: path for split, path in self.files.items() if path}
        if self.dataset_name or not any(Path(p).suffix.lower() == ".json" and Path(p).is_file()
                                        for p in given.values()):
            return super().load_raw()
        files = dict(self.files)
        for split, path in given.items():
            rows = read_nested_squad(path) if Path(path).suffix.lower() == ".json" and Path(path).is_file() else None
            if rows is not None:
                key = stable_hash([str(Path(path).resolve()), Path(path).stat().st_mtime_ns])
                flat = self.cache_dir / "raw" / "squad_flat" / f"{key}.jsonl"
                flat.parent.mkdir(parents=True, exist_ok=True)
                flat.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
                files[split] = str(flat)
        raw = load_raw(dataset_name=None, dataset_config=None, files=files, split_names=self.split_names,
                       cache_dir=str(self.cache_dir / "raw"), bundled=self.bundled_files())
        return self.with_validation(raw)

    def training_texts(self) -> Iterator[str]:
        raw = self.load_raw()
        self._check_columns(raw)
        columns = [self.question_column, self.context_column]
        for batch in raw["train"].select_columns(columns).iter(batch_size=1000):
            seen = set()
            for question, context in zip(batch[self.question_column], batch[self.context_column]):
                yield question or ""
                if context not in seen:  # SQuAD repeats each paragraph for every question
                    seen.add(context)
                    yield context or ""

    def _check_columns(self, raw: DatasetDict) -> None:
        for split, ds in raw.items():
            require_nonempty(ds, split, f"data ({split})")
            for key in ("question_column", "context_column", "answers_column"):
                column = getattr(self, key)
                if column not in ds.column_names:
                    raise UserError(f"data.{key}={column!r} is not a column of the {split} split "
                                    f"(columns: {', '.join(ds.column_names)})")

    def _check_answers(self, ds: Dataset, split: str) -> None:
        """Every answer_start must point at its answer text in the context: one line naming the rows otherwise."""
        col, ctx_col = self.answers_column, self.context_column
        bad: list[int] = []
        unanswered: list[int] = []
        for start in range(0, len(ds), 1000):
            part = ds[start:start + 1000]
            for i, (answers, context) in enumerate(zip(part[col], part[ctx_col])):
                if not isinstance(answers, dict) or "text" not in answers or "answer_start" not in answers:
                    raise UserError(f"data.answers_column={col!r} must hold {{'text': [...], 'answer_start': "
                                    f"[...]}} per row, the {split} split's row {start + i} has {answers!r}"[:300])
                texts, starts = answers["text"] or [], answers["answer_start"] or []
                if not texts:
                    unanswered.append(start + i)
                if len(texts) != len(starts) or any(
                        s is None or t is None or not 0 <= int(s) <= len(context or "") - len(t)
                        or context[int(s):int(s) + len(t)] != t for t, s in zip(texts, starts)):
                    bad.append(start + i)
        if bad:
            raise UserError(f"data ({split}): {len(bad)} of {len(ds)} rows have an {col}.answer_start that does not "
                            f"point at the {col}.text in {ctx_col!r} (first: {_row_named(ds, bad[0])})")
        if unanswered and not self.version_2_with_negative:
            raise UserError(f"data ({split}): {len(unanswered)} of {len(ds)} rows have no answer in {col!r} (first: "
                            f"{_row_named(ds, unanswered[0])}): set data.version_2_with_negative=true for unanswerable "
                            f"questions (SQuAD v2.0)")

    # ----------------------------------------------------------------- tokenize once
    def _process(self, raw: DatasetDict) -> tuple[DatasetDict, dict[str, Any]]:
        self._check_columns(raw)
        for split, ds in raw.items():
            self._check_answers(ds, split)
        processed = DatasetDict()
        for split, ds in raw.items():
            keep_text = split != "train"
            processed[split] = ds.map(
                self._encode, batched=True, with_indices=True, remove_columns=ds.column_names,
                num_proc=self.preprocessing_num_workers, desc=f"tokenizing {split}", load_from_cache_file=False,
                fn_kwargs={"keep_text": keep_text})
        counts = {split: {"examples": len(raw[split]), "features": len(processed[split])} for split in raw}
        return processed, {"counts": counts, "baseline": self._first_sentence_baseline(raw)}

    def _encode(self, batch: dict[str, list], indices: list[int], keep_text: bool) -> dict[str, list]:
        tok = self.tokenizer
        questions = [(q or "").lstrip() for q in batch[self.question_column]]
        longest = max((len(ids) for ids in tok(questions, add_special_tokens=False)["input_ids"]), default=0)
        specials = tok.num_special_tokens_to_add(pair=True)
        if longest + specials + self.doc_stride >= self.max_length:
            raise UserError(f"data.doc_stride={self.doc_stride} leaves no room for the context: a question of "
                            f"{longest} tokens + {specials} special tokens + the stride must stay below "
                            f"data.max_length={self.max_length} (lower doc_stride or raise max_length)")
        row_ids = batch["id"] if "id" in batch else [str(i) for i in indices]
        return encode_windows(tok, batch[self.question_column], batch[self.context_column],
                              batch[self.answers_column], row_ids, indices, self.max_length, self.doc_stride, keep_text)

    def _first_sentence_baseline(self, raw: DatasetDict) -> dict[str, float | None]:
        """EM/F1 on validation of answering every question with the first sentence of its context: the floor
        the model's val/exact_match and val/f1 are read against."""
        if "validation" not in raw:
            return {"f1": None, "exact_match": None}
        ds = raw["validation"]
        preds, golds = [], []
        for context, answers in zip(arrow_column(ds, self.context_column).to_pylist(),
                                    arrow_column(ds, self.answers_column).to_pylist()):
            context = context or ""
            cut = [i for i in (context.find(". "), context.find("? "), context.find("! ")) if i >= 0]
            preds.append(context[:min(cut) + 1] if cut else context)
            golds.append(list(answers["text"]))
        if self.version_2_with_negative:
            scores = squad_v2_scores(preds, golds)
            return {"f1": scores["f1"], "exact_match": scores["exact_match"]}
        return squad_scores(preds, golds)

    def _after_load(self, datasets: DatasetDict, meta: dict[str, Any]) -> None:
        self.baseline, self.counts = meta["baseline"], meta["counts"]
        self.collate_fn = QACollator(self.tokenizer, pad_to_multiple_of=self.pad_to_multiple_of)


# What run_qa's postprocess_qa_predictions predicts for a question without any valid span.
NO_ANSWER = "empty"


# ----------------------------------------------------------------------------------------------- post-processing
def best_spans(start_logits: torch.Tensor, end_logits: torch.Tensor, offset_start: torch.Tensor,
               offset_end: torch.Tensor, attention_mask: torch.Tensor | None = None, n_best_size: int = 20,
               max_answer_length: int = 30) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The best span of each feature (window): `postprocess_qa_predictions`' candidates (the `n_best_size` top
    start and end tokens, pairs with both ends inside the context, end >= start, at most `max_answer_length`
    tokens) scored by start + end logit. Returns (score, start char, end char) per feature; -inf where none is
    valid. The best answer of a question is the best of its windows' bests (the top of run_qa's merged n-best)."""
    start_logits, end_logits = start_logits.float(), end_logits.float()
    if attention_mask is not None:  # padding is not part of a feature (run_qa pads only to a fixed length)
        pad = attention_mask == 0
        start_logits = start_logits.masked_fill(pad, float("-inf"))
        end_logits = end_logits.masked_fill(pad, float("-inf"))
    k = min(n_best_size, start_logits.shape[-1])
    s_val, s_idx = start_logits.topk(k, dim=-1)  # (B, k), sorted descending like argsort[-1:-k-1:-1]
    e_val, e_idx = end_logits.topk(k, dim=-1)
    s_char, e_char = offset_start.gather(-1, s_idx), offset_end.gather(-1, e_idx)
    length = e_idx[:, None, :] - s_idx[:, :, None] + 1
    valid = (s_char >= 0)[:, :, None] & (e_char >= 0)[:, None, :] & (length >= 1) & (length <= max_answer_length)
    scores = (s_val[:, :, None] + e_val[:, None, :]).masked_fill(~valid, float("-inf"))
    best, flat = scores.flatten(1).max(-1)  # first maximum: start-major order, as run_qa's loops
    rows = torch.arange(len(flat), device=flat.device)
    return best, s_char[rows, flat // k], e_char[rows, flat % k]


class SquadMetric(Metric):
    """Exact match and F1 (SQuAD v1.1, or v2.0 with `version_2_with_negative`) over the questions of a whole
    split, from per-window best spans.

    List states reduced by concatenation: under DDP the windows of every rank are gathered before a question's
    windows are merged, so a question whose windows fall on different ranks is answered from all of them, and a
    question repeated by the distributed sampler's padding is scored once. Each window carries its question's id,
    question, context and gold answers as UTF-8 bytes, so the texts travel with the tensors.

    SQuAD v2.0 follows run_qa's `postprocess_qa_predictions(version_2_with_negative=True)`: a question's null score
    is the lowest [CLS] start + end logit over its windows; it gets no answer ("") when the null score minus the
    best span's score exceeds `null_score_diff_threshold`.
    """

    full_state_update = False

    def __init__(self, n_best_size: int = 20, max_answer_length: int = 30, version_2_with_negative: bool = False,
                 null_score_diff_threshold: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n_best_size, self.max_answer_length = n_best_size, max_answer_length
        self.version_2_with_negative, self.null_score_diff_threshold = version_2_with_negative, \
            null_score_diff_threshold
        for name in ("example_index", "score", "null_score", "start_char", "end_char", "text_bytes",
                     "text_lengths"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, start_logits: torch.Tensor, end_logits: torch.Tensor, batch: Mapping[str, Any]) -> None:
        score, start, end = best_spans(start_logits, end_logits, batch["offset_start"], batch["offset_end"],
                                       batch.get("attention_mask"), self.n_best_size, self.max_answer_length)
        self.example_index.append(batch["example_index"].long())
        self.score.append(score)
        cls = batch.get("cls_index")
        cls = torch.zeros_like(batch["example_index"]) if cls is None else cls
        rows = torch.arange(len(score), device=score.device)
        self.null_score.append(start_logits.float()[rows, cls] + end_logits.float()[rows, cls])
        self.start_char.append(start.long())
        self.end_char.append(end.long())
        texts = [[batch["context"][i], list(batch["answers"][i]), batch["example_id"][i] if "example_id" in batch else None,
                  batch["question"][i] if "question" in batch else None] for i in range(len(score))]
        blob, lengths = encode_objects(texts, score.device)
        self.text_bytes.append(blob)
        self.text_lengths.append(lengths)

    def records(self) -> dict[int, dict[str, Any]]:
        """Question row -> {id, question, prediction, answers} (+ `null_score_diff` for SQuAD v2.0), in row order."""
        if not len(self.example_index):  # a list, or after a DDP sync a tensor
            return {}
        index = dim_zero_cat(self.example_index).tolist()
        score, null = dim_zero_cat(self.score).tolist(), dim_zero_cat(self.null_score).tolist()
        start, end = dim_zero_cat(self.start_char).tolist(), dim_zero_cat(self.end_char).tolist()
        texts = decode_objects(self.text_bytes, self.text_lengths)
        best: dict[int, tuple[float, int, int]] = {}
        least_null: dict[int, float] = {}
        first: dict[int, int] = {}
        for i, row in enumerate(index):
            first.setdefault(row, i)
            if row not in best or score[i] > best[row][0]:
                best[row] = (score[i], start[i], end[i])
            least_null[row] = min(least_null.get(row, float("inf")), null[i])
        out = {}
        for row, (value, s, e) in sorted(best.items()):
            context, answers, qid, question = texts[first[row]]
            text = (context[s:e] if value != float("-inf") else "") or NO_ANSWER
            record = {"id": qid, "question": question, "prediction": text, "answers": answers}
            if self.version_2_with_negative:
                # run_qa: without a valid span the best non-null answer is "empty" with score 0
                diff = least_null[row] - (value if value != float("-inf") else 0.0)
                record["null_score_diff"] = diff
                if diff > self.null_score_diff_threshold:
                    record["prediction"] = ""
            out[row] = record
        return out

    def predictions(self) -> dict[int, tuple[str, list[str]]]:
        """Question row -> (predicted answer, gold answers)."""
        return {row: (r["prediction"], r["answers"]) for row, r in self.records().items()}

    def compute(self) -> dict[str, float]:
        predicted = self.predictions()
        if not predicted:
            return {}
        preds, golds = zip(*predicted.values())
        if self.version_2_with_negative:
            return squad_v2_scores(list(preds), list(golds))
        return squad_scores(list(preds), list(golds))


class ExtractiveQAModule(HFTaskModule):
    """Logs `train/loss` and, for `val`/`test`: `loss` (start/end cross-entropy over windows, [CLS] where a window
    does not hold the answer), `exact_match` and `f1` (SQuAD v1.1 over questions, in [0, 1]; with the data's
    `version_2_with_negative` SQuAD v2.0's, plus `HasAns_exact_match`/`HasAns_f1`/`NoAns_exact_match`/`NoAns_f1`);
    `val/first_sentence_f1` and `val/first_sentence_exact_match` are the data module's baseline (answer = the first
    sentence of the context). `n_best_size`, `max_answer_length` and `null_score_diff_threshold` are run_qa's
    post-processing settings. Each evaluation writes `predictions_<stage>.jsonl` (one object per question: id,
    question, prediction, answers) and `predictions_<stage>.json` (run_qa's `{id: answer}`)."""

    auto_class = AutoModelForQuestionAnswering
    task = "question_answering"
    tokenizer_kind = "wordpiece"
    architecture_suffixes = ("ForQuestionAnswering",)
    peft_task_type, lora_embeddings = "QUESTION_ANS", True
    predictions_file = "predictions.json"
    prediction_settings = ("max_length", "doc_stride", "version_2_with_negative", "n_best_size", "max_answer_length",
                           "null_score_diff_threshold")

    @staticmethod
    def predict(model: Any, tokenizer: Any, cfg: Any, settings: Mapping[str, Any], device: str) -> Any:
        """run_qa's predictions JSON `{id: answer}` for SQuAD-format questions (JSON/JSONL, or the official
        nested JSON)."""
        require(getattr(tokenizer, "is_fast", False),
                f"model_path: {type(tokenizer).__name__} is not a fast tokenizer (offsets are needed)")
        path = Path(cfg.input_file)
        rows = (read_nested_squad(str(path)) if path.suffix.lower() == ".json" else None) or read_rows(path)
        require(bool(rows), f"input_file: no questions in {cfg.input_file}")
        return predict_answers(model, tokenizer, rows, cfg, settings, device)
    monitor = ("val/f1", "max")
    optimized_metric = ("val/f1", "max")
    progress_bar_metrics = frozenset({"loss", "exact_match", "f1"})
    data_kwargs = frozenset({"baseline_f1", "baseline_exact_match", "version_2_with_negative"})
    baseline_metrics = {"baseline_f1": "val/first_sentence_f1",
                        "baseline_exact_match": "val/first_sentence_exact_match"}

    def __init__(self, *, n_best_size: Positive[int] = 20, max_answer_length: Positive[int] = 30,
                 null_score_diff_threshold: float = 0.0, version_2_with_negative: bool | None = None,
                 baseline_f1: float | None = None, baseline_exact_match: float | None = None,
                 tokenizer_vocab_size: Positive[int] = 4000, learning_rate: Positive[float] = 5e-4,
                 warmup_ratio: UnitFraction = 0.1, **kwargs: Any) -> None:
        self._post = {"n_best_size": n_best_size, "max_answer_length": max_answer_length,
                      "version_2_with_negative": bool(version_2_with_negative),
                      "null_score_diff_threshold": null_score_diff_threshold}
        super().__init__(tokenizer_vocab_size=tokenizer_vocab_size, learning_rate=learning_rate,
                         warmup_ratio=warmup_ratio, **kwargs)

    def make_metrics(self) -> nn.ModuleDict:
        return nn.ModuleDict({"loss": MeanMetric(), "squad": SquadMetric(**self._post)})

    def update_metrics(self, metrics: nn.ModuleDict, batch: dict[str, Any]) -> None:
        out = self.model(**{k: v for k, v in batch.items() if k not in EVAL_KEYS})
        metrics["loss"].update(out.loss.detach(), weight=int(batch["input_ids"].shape[0]))
        metrics["squad"].update(out.start_logits.detach(), out.end_logits.detach(), batch)

    def compute_metrics(self, metrics: nn.ModuleDict) -> dict[str, Any]:
        squad = metrics["squad"]
        with squad.sync_context():  # all ranks' windows (what `compute()` gathers; `records()` is not it)
            records = squad.records()
        if not records:
            return {"loss": float(metrics["loss"].compute())}
        preds, golds = [r["prediction"] for r in records.values()], [r["answers"] for r in records.values()]
        v2 = squad.version_2_with_negative
        scores = squad_v2_scores(preds, golds) if v2 else squad_scores(preds, golds)
        counts = {k: int(scores.pop(k)) for k in [k for k in scores if k.endswith("total")]}
        if not self.trainer.sanity_checking:
            stage = "test" if self.trainer.testing else "val"
            details = {"squad_version": "2.0" if v2 else "1.1", "questions": len(records), **counts}
            path = self.write_predictions(stage, records.values(), details)
            if path is not None:  # rank 0: run_qa's predictions.json as well
                write_json_atomic(path.with_suffix(".json"), {r["id"]: r["prediction"] for r in records.values()})
        return {"loss": float(metrics["loss"].compute()), **scores}

    def fit_summary(self, metrics: Mapping[str, Any]) -> str | None:
        f1, baseline = metrics.get("val/f1"), self.hparams.get("baseline_f1")
        if f1 is None or baseline is None:
            return None
        em = metrics.get("val/exact_match")
        em_text = f", exact match {float(em):.4f} vs {self.hparams.baseline_exact_match:.4f}" if em is not None else ""
        version = "v2.0" if self._post["version_2_with_negative"] else "v1.1"
        return f"val/f1 {float(f1):.4f} vs first-sentence baseline {baseline:.4f}{em_text} (SQuAD {version} over " \
               f"questions; the baseline answers every question with the context's first sentence)"


registry.register(ExtractiveQAModule, legacy={
    "lightning_llm.modules.question_answering.ExtractiveQAModule": ExtractiveQAModule,
    "lightning_llm.data.question_answering.QuestionAnsweringDataModule": QuestionAnsweringDataModule})


# SquadMetric's post-processing settings and their defaults (a run's own values come in `settings`).
_POST_PROCESSING = {"n_best_size": 20, "max_answer_length": 30, "null_score_diff_threshold": 0.0,
                    "version_2_with_negative": False}


def predict_answers(model: PreTrainedModel, tokenizer: Any, rows: list[dict[str, Any]], cfg: DictConfig,
                    settings: dict[str, Any], device: str) -> dict[str, str]:
    """run_qa's predictions: doc-stride windows as evaluation builds them, answers by `SquadMetric`'s n-best
    post-processing over all windows of a question (SQuAD v2.0's null-score rule when the model was trained so)."""
    path = Path(cfg.input_file)
    questions = [str(q or "").lstrip() for q in file_column(rows, "question_column", cfg.question_column, path)]
    contexts = [str(c or "") for c in file_column(rows, "context_column", cfg.context_column, path)]
    ids = [str(row.get(cfg.id_column, i)) for i, row in enumerate(rows)]
    post = {k: cfg[k] if cfg.get(k) is not None else settings.get(k, default) for k, default in _POST_PROCESSING.items()}
    max_length = model_max_length(model, tokenizer, cfg.max_length or settings.get("max_length") or 384)
    stride = cfg.doc_stride if cfg.doc_stride is not None else settings.get("doc_stride", 128)
    require(stride < max_length, f"doc_stride={stride} must be below max_length={max_length}")
    metric = SquadMetric(**post).to(device)
    collate = QACollator(tokenizer, auto_pad_multiple())
    no_answers = [{"text": [], "answer_start": []}] * len(rows)
    for start in range(0, len(rows), cfg.batch_size):
        part = list(range(start, min(start + cfg.batch_size, len(rows))))
        enc = encode_windows(tokenizer, [questions[i] for i in part], [contexts[i] for i in part], no_answers,
                             [ids[i] for i in part], part, max_length, stride, keep_text=True)
        features = [{key: values[f] for key, values in enc.items() if key not in ("start_positions", "end_positions")}
                    for f in range(len(enc["input_ids"]))]
        for chunk in batches(features, cfg.batch_size):
            batch = collate([dict(f) for f in chunk])
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
            with torch.inference_mode():
                out = model(**inputs)
            metric.update(out.start_logits, out.end_logits, batch)
    return {r["id"]: r["prediction"] for r in metric.records().values()}
