"""Extractive question answering data: SQuAD-format questions, contexts and answer spans, split into doc-stride
windows (features) the way transformers' run_qa prepares them."""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict

from lightning_llm.config.schema import NonNegative, Positive
from lightning_llm.data.base import CachedTextDataModule, arrow_column
from lightning_llm.data.padding import PaddingCollator
from lightning_llm.data.sources import load_raw, require_nonempty, stable_hash
from lightning_llm.errors import UserError

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
                            f"point at the {col}.text in {ctx_col!r} (first: row {bad[0]})")
        if unanswered and not self.version_2_with_negative:
            raise UserError(f"data ({split}): {len(unanswered)} of {len(ds)} rows have no answer in {col!r} (first: "
                            f"row {unanswered[0]}): set data.version_2_with_negative=true for unanswerable "
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
        contexts = [c or "" for c in batch[self.context_column]]
        longest = max((len(ids) for ids in tok(questions, add_special_tokens=False)["input_ids"]), default=0)
        specials = tok.num_special_tokens_to_add(pair=True)
        if longest + specials + self.doc_stride >= self.max_length:
            raise UserError(f"data.doc_stride={self.doc_stride} leaves no room for the context: a question of "
                            f"{longest} tokens + {specials} special tokens + the stride must stay below "
                            f"data.max_length={self.max_length} (lower doc_stride or raise max_length)")
        out = tok(questions, contexts, truncation="only_second", max_length=self.max_length, stride=self.doc_stride,
                  return_overflowing_tokens=True, return_offsets_mapping=True, padding=False)
        sample_map = out.pop("overflow_to_sample_mapping")
        offsets_all = out.pop("offset_mapping")
        starts, ends, ex_index, cls_index, off_s, off_e, ctx, gold, qids, qs = ([] for _ in range(10))
        row_ids = batch["id"] if "id" in batch else [str(i) for i in indices]
        for i, offsets in enumerate(offsets_all):
            ids = out["input_ids"][i]
            cls = ids.index(tok.cls_token_id) if tok.cls_token_id in ids else 0
            seq = out.sequence_ids(i)
            row = sample_map[i]
            context_tokens = [j for j, s in enumerate(seq) if s == 1]
            answers = batch[self.answers_column][row]
            start_token = end_token = cls
            if answers["answer_start"] and context_tokens:
                start_char = int(answers["answer_start"][0])
                end_char = start_char + len(answers["text"][0])
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
                qs.append(batch[self.question_column][row] or "")
                off_s.append([o[0] if s == 1 else -1 for o, s in zip(offsets, seq)])
                off_e.append([o[1] if s == 1 else -1 for o, s in zip(offsets, seq)])
                ctx.append(contexts[row])
                gold.append([str(t) for t in answers["text"]])
        out["start_positions"], out["end_positions"] = starts, ends
        if keep_text:
            out.update({"example_index": ex_index, "cls_index": cls_index, "offset_start": off_s, "offset_end": off_e,
                        "example_id": qids, "question": qs, "context": ctx, "answers": gold})
        return dict(out)

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
