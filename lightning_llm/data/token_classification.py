"""Token classification (NER) data: words and their tags from hub datasets, JSON/JSONL/parquet or CoNLL text."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pyarrow.compute as pc
from datasets import ClassLabel, Dataset, DatasetDict
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from lightning_llm.config.schema import Positive
from lightning_llm.data.base import CachedTextDataModule, arrow_column
from lightning_llm.data.padding import PaddingCollator
from lightning_llm.data.sources import require_nonempty
from lightning_llm.errors import UserError
from lightning_llm.runtime.extras import require_extra

_CONLL_SUFFIXES = (".conll",)  # always CoNLL; .txt/.tsv only with file_format=conll
# Keys of an evaluation batch that are not model inputs (`TaggingCollator`): `example_index` (the sentence's row, a
# tensor) and `words` (its words, a list per sentence), for the predictions file.
EVAL_KEYS = ("example_index", "words")


def read_conll(path: str, key: str) -> Dataset:
    """A CoNLL-style file as rows of `tokens`/`tags`: one `token ... tag` per line (the token is the first
    whitespace-separated column, the tag the last), a blank line between sentences, `-DOCSTART-` lines skipped."""
    sentences: list[tuple[list[str], list[str]]] = []
    words: list[str] = []
    tags: list[str] = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields or fields[0] == "-DOCSTART-":
                if words:
                    sentences.append((words, tags))
                    words, tags = [], []
                continue
            if len(fields) < 2:
                raise UserError(f"{key}: {path}:{number}: expected `token ... tag`, got {line.strip()!r}")
            words.append(fields[0])
            tags.append(fields[-1])
    if words:
        sentences.append((words, tags))
    return Dataset.from_dict({"tokens": [w for w, _ in sentences], "tags": [t for _, t in sentences]})


def seqeval_metrics() -> Any:
    """`seqeval.metrics`, or the one-line error naming the `ner` extra."""
    return require_extra("seqeval.metrics", "ner", "model=token_classifier")


def _list_feature(feature: Any) -> Any | None:
    """The element feature of a list-valued column (`List`/`Sequence`/`LargeList`), None for a scalar column."""
    return getattr(feature, "feature", None)


class TaggingCollator:
    """`PaddingCollator`'s tensors (the same as transformers' `DataCollatorForTokenClassification`, labels padded
    with -100, ~6x faster: 0.07 vs 0.41 ms per batch of 32 demo sentences on 2 CPU cores), plus the evaluation
    sentences' `words` as a Python list (Lightning moves the tensors and leaves the list)."""

    def __init__(self, tokenizer: Any, pad_to_multiple_of: int | None = None) -> None:
        self.pad = PaddingCollator(tokenizer, pad_to_multiple_of=pad_to_multiple_of)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        if "words" not in features[0]:
            return self.pad(features)
        words = [f["words"] for f in features]
        batch = self.pad([{k: v for k, v in f.items() if k != "words"} for f in features])
        batch["words"] = words
        return batch


class TokenClassificationDataModule(CachedTextDataModule):
    """Word-level tagged sentences, split into sub-words by a fast tokenizer (`word_ids()`).

    The first sub-word of each word carries its tag and the others -100, as transformers' run_ner does;
    `label_all_tokens` tags the continuation pieces of training words too (`B-X` as `I-X`), while validation and
    test keep one label per word, so their metrics are over words, and also their row (`example_index`) and words,
    for the predictions file. Tag names come from `label_names`, a `Sequence(ClassLabel)` feature, or the sorted
    distinct string tags of the training split; `llm-eval` passes a checkpoint's own tag names, so a test file with a
    subset of the tags is encoded with the model's ids. `file_format=conll`
    reads every local file (any extension) as CoNLL text; by default only `.conll` files are.
    """

    objectives = frozenset({"token_classification"})
    needs_fast_tokenizer = "word_ids()"
    _bundled = {"train": "ner_train.jsonl", "validation": "ner_validation.jsonl", "test": "ner_test.jsonl"}

    def __init__(self, *, tokens_column: str = "tokens", tags_column: str = "tags",
                 label_names: list[str] | None = None, file_format: Literal["auto", "conll"] = "auto",
                 label_all_tokens: bool = False, max_length: Positive[int] = 128, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tokens_column, self.tags_column = tokens_column, tags_column
        self.label_names = list(label_names) if label_names else None
        self.file_format, self.label_all_tokens = file_format, label_all_tokens
        self.max_length = max_length
        self.baseline: dict[str, float | None] = {"f1": None, "acc": None}
        self.collate_fn = None  # set once a tokenizer is known (see setup)

    def model_kwargs(self) -> dict[str, Any]:
        """The tag names (so `id2label`) and the majority-tag baseline the module reports its F1 against."""
        names = self.label_names
        return {"num_labels": len(names) if names else None, "label_names": names,
                "baseline_f1": self.baseline["f1"], "baseline_acc": self.baseline["acc"]}

    def _processing_params(self) -> dict[str, Any]:
        return {"tokens": self.tokens_column, "tags": self.tags_column, "label_names": self.label_names,
                "format": self.file_format, "label_all_tokens": self.label_all_tokens, "max_length": self.max_length,
                "eval_words": True}

    # ----------------------------------------------------------------- raw data
    def load_raw(self) -> DatasetDict:
        """CoNLL text files are read here; everything else (hub, JSON/JSONL/parquet) by the base."""
        given = {split: path for split, path in self.files.items() if path}
        conll = {split: self.file_format == "conll" or Path(path).suffix.lower() in _CONLL_SUFFIXES
                 for split, path in given.items()}
        if self.dataset_name or not any(conll.values()):
            return super().load_raw()
        if not all(conll.values()):
            raise UserError(f"data.*_file: all files must share one format, got CoNLL and other files {given}")
        for split, path in given.items():
            if not Path(path).is_file():
                raise UserError(f"data.{split}_file: file not found: {path}")
        raw = DatasetDict({split: read_conll(path, f"data.{split}_file") for split, path in given.items()})
        return self.with_validation(raw)

    def training_texts(self) -> Iterator[str]:
        raw = self.load_raw()
        self._check_columns(raw)
        for batch in raw["train"].select_columns([self.tokens_column]).iter(batch_size=1000):
            yield from (" ".join(w for w in words if w) for words in batch[self.tokens_column] if words)

    def _check_columns(self, raw: DatasetDict) -> None:
        for split, ds in raw.items():
            require_nonempty(ds, split, f"data ({split})")
            for key in ("tokens_column", "tags_column"):
                column = getattr(self, key)
                if column not in ds.column_names:
                    raise UserError(f"data.{key}={column!r} is not a column of the {split} split "
                                    f"(columns: {', '.join(ds.column_names)})")
                if _list_feature(ds.features[column]) is None:
                    what = "words" if key == "tokens_column" else "tags"
                    raise UserError(f"data.{key}={column!r} must hold a list of {what} per row, the {split} split "
                                    f"has {ds.features[column]}")

    def _tag_names(self, raw: DatasetDict) -> list[str]:
        if self.label_names:
            return self.label_names
        element = _list_feature(next(iter(raw.values())).features[self.tags_column])
        if isinstance(element, ClassLabel):
            return list(element.names)
        if getattr(element, "dtype", None) in ("string", "large_string"):
            source = raw["train"] if "train" in raw else next(iter(raw.values()))
            tags = pc.unique(pc.list_flatten(arrow_column(source, self.tags_column))).to_pylist()
            return sorted(str(t) for t in tags if t is not None)
        raise UserError(f"data.tags_column={self.tags_column!r} holds integer tags without names: give "
                        f"data.label_names (the tag of each id, e.g. [O, B-PER, I-PER])")

    # ----------------------------------------------------------------- tokenize once
    def _process(self, raw: DatasetDict) -> tuple[DatasetDict, dict[str, Any]]:
        self._check_columns(raw)
        names = self._tag_names(raw)
        label_to_id = {name: i for i, name in enumerate(names)}
        # run_ner's continuation label: B-X -> I-X where that tag exists.
        b_to_i = [label_to_id.get("I-" + name[2:], i) if name.startswith("B-") else i for i, name in enumerate(names)]
        tok, words_col, tags_col, max_length = self.tokenizer, self.tokens_column, self.tags_column, self.max_length

        def encode(batch: dict[str, list], indices: list[int], split: str, all_pieces: bool,
                   class_names: list[str] | None) -> dict[str, list]:
            words = [[w if w is not None else "" for w in ws] for ws in batch[words_col]]
            out = tok(words, is_split_into_words=True, truncation=True, max_length=max_length)
            labels, cut, present = [], [], []
            for i, (row, tags) in enumerate(zip(words, batch[tags_col])):
                if tags is None or len(tags) != len(row):
                    raise UserError(f"data ({split}) row {indices[i]}: {len(row)} words in {words_col!r} but "
                                    f"{0 if tags is None else len(tags)} tags in {tags_col!r}")
                if class_names is not None:  # this split's ClassLabel ids -> names, then the model's ids
                    tags = [class_names[t] if isinstance(t, int) and 0 <= t < len(class_names) else t for t in tags]
                ids = [self._tag_id(t, label_to_id, names, split, indices[i]) for t in tags]
                present.append(sorted(set(ids)))  # of all words, truncated or not
                row_labels, previous = [], None
                word_ids = out.word_ids(i)
                for word in word_ids:
                    if word is None:
                        row_labels.append(-100)
                    elif word != previous:
                        row_labels.append(ids[word])
                    else:
                        row_labels.append(b_to_i[ids[word]] if all_pieces else -100)
                    previous = word
                labels.append(row_labels)
                last = max((w for w in word_ids if w is not None), default=-1)
                cut.append(len(word_ids) >= max_length and last < len(row) - 1)
            out["labels"] = labels
            out["truncated"] = cut
            out["present"] = present
            if split != "train":
                out["example_index"], out["words"] = list(indices), words
            return out

        processed, truncated, present = DatasetDict(), {}, {}
        for split, ds in raw.items():
            element = _list_feature(ds.features[tags_col])
            class_names = element.names if isinstance(element, ClassLabel) and element.names != names else None
            ds = ds.map(encode, batched=True, with_indices=True, remove_columns=ds.column_names,
                        num_proc=self.preprocessing_num_workers, desc=f"tokenizing {split}", load_from_cache_file=False,
                        fn_kwargs={"split": split, "all_pieces": self.label_all_tokens and split == "train",
                                   "class_names": class_names})
            truncated[split] = int(pc.sum(arrow_column(ds, "truncated")).as_py() or 0)
            present[split] = sorted(pc.unique(pc.list_flatten(arrow_column(ds, "present"))).to_pylist())
            processed[split] = ds.remove_columns(["truncated", "present"])
        return processed, {"label_names": names, "truncated": truncated, "present": present,
                           "sentences": {split: len(ds) for split, ds in processed.items()},
                           "baseline": self._majority_baseline(processed, names)}

    def _tag_id(self, tag: Any, label_to_id: dict[str, int], names: list[str], split: str, row: int) -> int:
        if isinstance(tag, int) and not isinstance(tag, bool):
            if not 0 <= tag < len(names):
                raise UserError(f"data ({split}) row {row}: tag id {tag} is outside data.label_names ({len(names)} "
                                f"names)")
            return tag
        if tag not in label_to_id:
            path = self.files.get(split)
            raise UserError(f"data ({split}) row {row}{f' of {path}' if path else ''}: tag {tag!r} is not among the "
                            f"model's tags {names}")
        return label_to_id[tag]

    @staticmethod
    def _majority_baseline(processed: DatasetDict, names: list[str]) -> dict[str, float | None]:
        """Entity F1 and token accuracy, on the validation words, of tagging everything with the most frequent
        training tag (usually O, whose entity F1 is 0): the floor a model's val/f1 and val/acc are read against."""
        if "train" not in processed or "validation" not in processed:
            return {"f1": None, "acc": None}
        labels = pc.list_flatten(arrow_column(processed["train"], "labels"))
        counts = pc.value_counts(pc.filter(labels, pc.not_equal(labels, -100)))  # in order of first appearance
        if not len(counts):
            return {"f1": None, "acc": None}
        ids, freq = counts.field("values").to_pylist(), counts.field("counts").to_pylist()
        majority = names[ids[freq.index(max(freq))]]
        truth = [[names[label] for label in labels if label != -100]
                 for labels in arrow_column(processed["validation"], "labels").to_pylist()]
        guess = [[majority] * len(tags) for tags in truth]
        metrics = seqeval_metrics()
        return {"f1": float(metrics.f1_score(truth, guess, zero_division=0)),
                "acc": float(metrics.accuracy_score(truth, guess))}

    def _after_load(self, datasets: DatasetDict, meta: dict[str, Any]) -> None:
        self.label_names, self.baseline = meta["label_names"], meta["baseline"]
        self.warn_missing_labels(self.label_names, meta.get("present", {}), "words tagged")
        self._warn_truncated(meta["truncated"], meta["sentences"])
        self.collate_fn = TaggingCollator(self.tokenizer, pad_to_multiple_of=self.pad_to_multiple_of)

    @rank_zero_only
    def _warn_truncated(self, truncated: dict[str, int], sentences: dict[str, int]) -> None:
        cut = {split: n for split, n in truncated.items() if n}
        if cut:
            parts = ", ".join(f"{n} of {sentences[split]} {split}" for split, n in cut.items())
            print(f"warning: data.max_length={self.max_length} cut {parts} sentences (the words past it are not "
                  f"tagged, trained on or scored)", file=sys.stderr)
