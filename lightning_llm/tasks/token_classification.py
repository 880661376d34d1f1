"""Token classification (NER): words -> one tag per word, labels on each word's first sub-word (run_ner), scored
with seqeval (entity-level micro precision/recall/F1) and token accuracy.

Token classification (NER) data: words and their tags from hub datasets, JSON/JSONL/parquet or CoNLL text.

Token classification (NER): an encoder with a per-token head, scored with seqeval over the whole split.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import pyarrow.compute as pc
import torch
from datasets import ClassLabel, Dataset, DatasetDict
from omegaconf import DictConfig
from pytorch_lightning.utilities.rank_zero import rank_zero_only
from torch import nn
from torchmetrics import MeanMetric, Metric
from torchmetrics.utilities import dim_zero_cat
from transformers import AutoModelForTokenClassification, PreTrainedModel

from lightning_llm import registry
from lightning_llm.config.schema import Positive, UnitFraction
from lightning_llm.data.base import CachedTextDataModule, arrow_column
from lightning_llm.data.padding import PaddingCollator, auto_pad_multiple
from lightning_llm.data.sources import require_nonempty
from lightning_llm.errors import UserError, require
from lightning_llm.modules.base import HFTaskModule
from lightning_llm.runtime.extras import require_extra
from lightning_llm.runtime.inputs import batches, file_column, model_max_length, read_rows, text_lines
from lightning_llm.utils.text_states import decode_objects, encode_objects

_CONLL_SUFFIXES = (".conll",)  # always CoNLL; .txt/.tsv only with file_format=conll
# Keys of an evaluation batch that are not model inputs (`TaggingCollator`): `example_index` (the sentence's row, a
# tensor) and `words` (its words, a list per sentence), for the predictions file.
EVAL_KEYS = ("example_index", "words")


def read_conll(path: str, key: str) -> Dataset:
    """A CoNLL-style file as rows of `tokens`/`tags`: one `token ... tag` per line (the token is the first
    whitespace-separated column, the tag the last), a blank line between sentences, `-DOCSTART-` lines skipped.
    Every line must have the file's usual number of columns (the most common one): a line with more is a token
    holding a space (`New York NN B-LOC` in a 3-column file), which would silently tag "New" and drop "York"."""
    with open(path, encoding="utf-8") as f:
        lines = [(number, line, line.split()) for number, line in enumerate(f, 1)]
    counts = Counter(len(fields) for _, _, fields in lines if fields and fields[0] != "-DOCSTART-")
    columns = counts.most_common(1)[0][0] if counts else 0
    sentences: list[tuple[list[str], list[str]]] = []
    words: list[str] = []
    tags: list[str] = []
    for number, line, fields in lines:
        if not fields or fields[0] == "-DOCSTART-":
            if words:
                sentences.append((words, tags))
                words, tags = [], []
            continue
        if len(fields) < 2:
            raise UserError(f"{key}: {path}:{number}: expected `token ... tag`, got {line.strip()!r}")
        if len(fields) > columns:
            raise UserError(f"{key}: {path}:{number}: {len(fields)} columns where the file's lines have {columns} "
                            f"(a token with a space? one word per line), got {line.strip()!r}")
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
    with -100, several times faster: docs/benchmarks.md, "Collators"), plus the evaluation
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


_PREFIXES = ("B-", "I-", "E-", "S-", "L-", "U-")  # IOB1/IOB2/IOE/IOBES/BILOU chunk prefixes
_AVERAGES = {"micro avg", "macro avg", "weighted avg"}


class SeqevalMetric(Metric):
    """seqeval's entity-level micro precision/recall/F1, per-type F1 and token accuracy over a whole split.

    Word-level tag ids are kept per sequence (positions labelled -100 are not words) in list states reduced by
    concatenation, so under DDP every rank's sentences are gathered and scored once, as one corpus: entity F1 is
    not a mean of batch F1s. Scoring is seqeval's default mode (as transformers' run_ner and `evaluate`'s
    seqeval use it), which reads IOB1, IOB2 and IOBES tags the way seqeval does. With `example_index` (the
    sentence's row) the sentences come back in row order and a row repeated by the distributed sampler's padding
    counts once; with `words` they come back with their words, for the predictions file.
    """

    full_state_update = False

    def __init__(self, label_names: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.label_names = list(label_names)
        for name in ("preds", "target", "lengths", "example_index", "words", "words_lengths"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, labels: torch.Tensor, example_index: torch.Tensor | None = None,
               words: list[list[str]] | None = None) -> None:
        """`preds`, `labels`: (batch, tokens) tag ids; labels -100 where no word starts."""
        starts = labels != -100
        self.preds.append(preds[starts].long())
        self.target.append(labels[starts].long())
        self.lengths.append(starts.sum(-1).long())
        if example_index is not None:
            self.example_index.append(example_index.long())
        if words is not None:
            blob, lengths = encode_objects(words, labels.device)
            self.words.append(blob)
            self.words_lengths.append(lengths)

    def _rows(self) -> list[tuple[list[int], list[int], list[str] | None]]:
        """(true ids, predicted ids, words or None) per sentence, in row order, each row once."""
        if not len(self.lengths):  # a list, or after a DDP sync a tensor (empty when no rank had any)
            return []
        lengths = dim_zero_cat(self.lengths).tolist()
        target, preds = dim_zero_cat(self.target).tolist(), dim_zero_cat(self.preds).tolist()
        words = decode_objects(self.words, self.words_lengths) if len(self.words_lengths) else [None] * len(lengths)
        rows, start = [], 0
        for n, row_words in zip(lengths, words):
            rows.append((target[start:start + n], preds[start:start + n], row_words))
            start += n
        if not len(self.example_index):
            return rows
        by_index: dict[int, tuple[list[int], list[int], list[str] | None]] = {}
        for index, row in zip(dim_zero_cat(self.example_index).tolist(), rows):
            by_index.setdefault(index, row)
        return [by_index[i] for i in sorted(by_index)]

    def sequences(self) -> tuple[list[list[str]], list[list[str]]]:
        """(true tags, predicted tags) per sentence, as names."""
        names = self.label_names
        rows = self._rows()
        return [[names[i] for i in t] for t, _, _ in rows], [[names[i] for i in p] for _, p, _ in rows]

    def records(self) -> list[dict[str, Any]]:
        """One object per sentence for `predictions_<stage>.jsonl`: the scored words (a sentence cut by
        max_length keeps its first words only; `truncated` says how many were dropped), gold and predicted tags."""
        names, out = self.label_names, []
        for target, preds, words in self._rows():
            record: dict[str, Any] = {}
            if words is not None:
                record["words"] = words[:len(target)]
                if len(words) > len(target):
                    record["truncated"] = len(words) - len(target)
            record["tags"] = [names[i] for i in target]
            record["predicted"] = [names[i] for i in preds]
            out.append(record)
        return out

    def compute(self) -> dict[str, float]:
        return self.scores()[0]

    def scores(self) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        """(metric values, seqeval's per-type report with precision, recall, f1-score, support) from one pass:
        the report's micro average is what seqeval's precision/recall/f1_score compute (4 entity extractions
        were 40% of a demo validation's metric time)."""
        metrics = require_extra("seqeval.metrics", "ner", "model=token_classifier")
        truth, pred = self.sequences()
        if not truth:
            return {}, {}
        report = metrics.classification_report(truth, pred, output_dict=True, zero_division=0)
        micro = report.get("micro avg") or {"precision": 0.0, "recall": 0.0, "f1-score": 0.0}
        values = {"precision": micro["precision"], "recall": micro["recall"], "f1": micro["f1-score"],
                  "acc": metrics.accuracy_score(truth, pred)}
        # Every type the tag names define, present in this split or not, so each epoch logs the same keys.
        types = {name[2:] for name in self.label_names if name[:2] in _PREFIXES} | set(report) - _AVERAGES
        for name in sorted(types):
            values[f"f1_{name}"] = report.get(name, {}).get("f1-score", 0.0)
        report = {name: {k: float(v) for k, v in row.items()} for name, row in report.items()}
        return {name: float(value) for name, value in values.items()}, report


class TokenClassificationModule(HFTaskModule):
    """Logs `train/loss` and, for `val`/`test`: `loss`, `precision`, `recall`, `f1` (seqeval, entity-level micro),
    `acc` (token accuracy over words), `f1_<TYPE>` per entity type; `val/majority_f1` and `val/majority_acc` are
    the majority-tag baseline from the data module (`baseline_f1`, `baseline_acc`)."""

    auto_class = AutoModelForTokenClassification
    task = "token_classification"
    tokenizer_kind = "wordpiece"
    architecture_suffixes = ("ForTokenClassification",)
    peft_task_type, lora_embeddings = "TOKEN_CLS", True

    @staticmethod
    def predict(model: Any, tokenizer: Any, cfg: Any, settings: Mapping[str, Any], device: str) -> Any:
        """Each word's tag (`tokens_column` lists of a JSON(L) file, else whitespace-split lines): JSONL
        `{"words", "tags"}`."""
        require(getattr(tokenizer, "is_fast", False),
                f"model_path: {type(tokenizer).__name__} is not a fast tokenizer (word_ids are needed)")
        sentences = _sentences(cfg)
        require(bool(sentences), f"input_file: no sentences in {cfg.input_file}")
        max_length = model_max_length(model, tokenizer, cfg.max_length or settings.get("max_length"))
        return predict_tags(model, tokenizer, sentences, max_length, cfg.batch_size, device)
    monitor = ("val/f1", "max")
    optimized_metric = ("val/f1", "max")
    progress_bar_metrics = frozenset({"loss", "f1"})
    data_kwargs = frozenset({"label_names", "baseline_f1", "baseline_acc"})
    eval_data_settings = frozenset({"label_names"})
    baseline_metrics = {"baseline_f1": "val/majority_f1", "baseline_acc": "val/majority_acc"}

    def __init__(self, *, num_labels: Positive[int] | None = None, label_names: list[str] | None = None,
                 baseline_f1: float | None = None, baseline_acc: float | None = None,
                 tokenizer_vocab_size: Positive[int] = 4000, learning_rate: Positive[float] = 5e-4,
                 warmup_ratio: UnitFraction = 0.1, **kwargs: Any) -> None:
        self._label_names = list(label_names) if label_names else None
        self._num_labels = num_labels or (len(label_names) if label_names else 2)
        super().__init__(tokenizer_vocab_size=tokenizer_vocab_size, learning_rate=learning_rate,
                         warmup_ratio=warmup_ratio, **kwargs)
        require_extra("seqeval", "ner", "model=token_classifier")  # fail before training, not at validation

    @classmethod
    def reconcile(cls, configured: Mapping[str, Any], from_data: Mapping[str, Any]) -> dict[str, Any]:
        """`num_labels` null = the data's tag count; a trained model's tags must be the data's (same ids)."""
        trained = configured.get("label_names")
        kwargs = super().reconcile(configured, from_data)
        names = from_data.get("label_names")
        if trained and names and list(trained) != list(names):
            raise UserError(f"data: the tags {names} are not the model's {list(trained)} (same names, same order)")
        if names and kwargs.get("num_labels") not in (None, len(names)):
            raise UserError(f"model.num_labels={kwargs['num_labels']} but the data has {len(names)} tags {names}: "
                            f"set model.num_labels=null")
        return kwargs

    def task_config(self) -> dict[str, Any]:
        names = self._label_names or [f"LABEL_{i}" for i in range(self._num_labels)]
        return {"num_labels": self._num_labels, "id2label": dict(enumerate(names)),
                "label2id": {name: i for i, name in enumerate(names)}}

    def make_metrics(self) -> nn.ModuleDict:
        names = self._label_names or [f"LABEL_{i}" for i in range(self._num_labels)]
        return nn.ModuleDict({"loss": MeanMetric(), "seqeval": SeqevalMetric(names)})

    def update_metrics(self, metrics: nn.ModuleDict, batch: dict[str, torch.Tensor]) -> None:
        out = self.model(**{k: v for k, v in batch.items() if k not in EVAL_KEYS})
        labels = batch["labels"]
        metrics["loss"].update(out.loss.detach(), weight=int((labels != -100).sum()))
        metrics["seqeval"].update(out.logits.argmax(-1), labels, batch.get("example_index"), batch.get("words"))

    def compute_metrics(self, metrics: nn.ModuleDict) -> dict[str, Any]:
        seqeval = metrics["seqeval"]
        with seqeval.sync_context():  # all ranks' sentences (what `compute()` gathers; these methods are not it)
            values, report = seqeval.scores()
            records = seqeval.records() if values and not self.trainer.sanity_checking else None
        if records is not None:
            self.write_predictions("test" if self.trainer.testing else "val", records, {"seqeval_report": report})
        return {"loss": float(metrics["loss"].compute()), **values}

    def fit_summary(self, metrics: Mapping[str, Any]) -> str | None:
        f1, baseline = metrics.get("val/f1"), self.hparams.get("baseline_f1")
        if f1 is None or baseline is None:
            return None
        acc = metrics.get("val/acc")
        tokens = f", token acc {float(acc):.4f} vs {self.hparams.baseline_acc:.4f}" if acc is not None else ""
        return f"val/f1 {float(f1):.4f} vs majority-tag baseline {baseline:.4f}{tokens} (all words tagged with the " \
               f"most frequent training tag)"


registry.register(TokenClassificationModule, legacy={
    "lightning_llm.modules.token_classification.TokenClassificationModule": TokenClassificationModule,
    "lightning_llm.data.token_classification.TokenClassificationDataModule": TokenClassificationDataModule})


def predict_tags(model: PreTrainedModel, tokenizer: Any, sentences: list[list[str]], max_length: int,
                 batch_size: int, device: str) -> list[dict[str, Any]]:
    """Each word's tag from its first sub-word, as evaluation reads it. A sentence longer than max_length is split
    into consecutive windows (overflowing tokens), so every word gets a tag."""
    names = model.config.id2label
    pad = PaddingCollator(tokenizer, auto_pad_multiple())
    records = []
    for batch in batches(sentences, batch_size):
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


def _sentences(cfg: DictConfig) -> list[list[str]]:
    path = Path(cfg.input_file)
    if path.suffix.lower() in (".jsonl", ".json"):
        words = file_column(read_rows(path), "tokens_column", cfg.tokens_column, path)
        bad = next((i for i, w in enumerate(words) if not isinstance(w, list)), None)
        require(bad is None, f"tokens_column={cfg.tokens_column!r} must hold a list of words per row, row {bad} of "
                             f"{path} has {type(words[bad]).__name__ if bad is not None else ''}")
        return words
    return [line.split() for line in text_lines(path)]
