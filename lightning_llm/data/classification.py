"""Text (or sentence-pair) classification data: any csv/json/jsonl/parquet file or hub dataset."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow.compute as pc
from datasets import ClassLabel, DatasetDict

from lightning_llm.config.schema import Positive
from lightning_llm.data.base import CachedTextDataModule, arrow_column
from lightning_llm.data.padding import PaddingCollator
from lightning_llm.data.sources import require_nonempty
from lightning_llm.errors import UserError


class TextClassificationDataModule(CachedTextDataModule):
    """Tokenized classification splits with integer `labels`; string labels are mapped to ids.

    Label names come from `label_names`, a `ClassLabel` feature, or the sorted distinct string labels of the
    training split; they end up in the exported model's `id2label`/`label2id`. `llm-eval` passes a checkpoint's
    own names as `label_names`, so a test file with a subset of the labels, in any order, is encoded with the
    model's ids (a `ClassLabel` feature whose names differ from them is mapped through the names).
    """

    objectives = frozenset({"classification"})
    _bundled = {"train": "reviews_train.csv", "validation": "reviews_validation.csv", "test": "reviews_test.csv"}

    def __init__(self, *, text_column: str = "text", text_pair_column: str | None = None,
                 label_column: str = "label", label_names: list[str] | None = None, max_length: Positive[int] = 128,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.text_column, self.text_pair_column, self.label_column = text_column, text_pair_column, label_column
        self.label_names = list(label_names) if label_names else None
        self.max_length = max_length
        self.num_labels: int | None = None
        self.collate_fn = None  # set once a tokenizer is known (see setup)

    def model_kwargs(self) -> dict[str, Any]:
        """The label count the data needs (distinct names, else the largest integer label + 1) and the names."""
        return {"num_labels": self.num_labels, "label_names": self.label_names}

    def _processing_params(self) -> dict[str, Any]:
        return {"text": self.text_column, "pair": self.text_pair_column, "label": self.label_column,
                "label_names": self.label_names, "max_length": self.max_length}

    def training_texts(self) -> Iterator[str]:
        raw = self.load_raw()
        self._check_columns(raw)
        for column in filter(None, [self.text_column, self.text_pair_column]):
            for batch in raw["train"].select_columns([column]).iter(batch_size=1000):
                yield from (t or "" for t in batch[column])

    def _check_columns(self, raw: DatasetDict) -> None:
        for split, ds in raw.items():
            require_nonempty(ds, split, f"data ({split})")
            for key in ("text_column", "text_pair_column", "label_column"):
                column = getattr(self, key)
                if column and column not in ds.column_names:
                    raise UserError(f"data.{key}={column!r} is not a column of the {split} split "
                                    f"(columns: {', '.join(ds.column_names)})")

    def _label_names(self, raw: DatasetDict) -> list[str] | None:
        if self.label_names:
            return self.label_names
        feature = next(iter(raw.values())).features[self.label_column]
        if isinstance(feature, ClassLabel):
            return list(feature.names)
        if feature.dtype in ("string", "large_string"):
            source = raw["train"] if "train" in raw else next(iter(raw.values()))
            values = pc.unique(arrow_column(source, self.label_column)).to_pylist()
            return sorted(str(v) for v in values if v is not None)
        return None

    def _process(self, raw: DatasetDict) -> tuple[DatasetDict, dict[str, Any]]:
        self._check_columns(raw)
        names = self._label_names(raw)
        label_to_id = {name: i for i, name in enumerate(names)} if names else None
        tok, text_col, pair_col, label_col = self.tokenizer, self.text_column, self.text_pair_column, self.label_column

        def encode(batch: dict[str, list], split: str, class_names: list[str] | None) -> dict[str, list]:
            texts = [t or "" for t in batch[text_col]]
            pairs = [t or "" for t in batch[pair_col]] if pair_col else None
            out = tok(texts, pairs, truncation=True, max_length=self.max_length)
            labels = batch[label_col]
            if class_names is not None:  # this split's ClassLabel ids -> names, then the model's ids below
                labels = [class_names[v] if v is not None and v >= 0 else None for v in labels]
            if label_to_id is not None and any(isinstance(v, str) for v in labels):
                unknown = {str(v) for v in labels if v is not None and str(v) not in label_to_id}
                if unknown:
                    raise UserError(f"data ({self.describe_split(split)}): labels {sorted(unknown)[:5]} in column "
                                    f"{label_col!r} are not among the model's labels {names}")
                labels = [None if v is None else label_to_id[str(v)] for v in labels]
            out["labels"] = labels
            return out

        processed, present, highest = DatasetDict(), {}, []
        for split, ds in raw.items():
            feature = ds.features[label_col]
            class_names = feature.names if isinstance(feature, ClassLabel) and names and feature.names != names \
                else None
            processed[split] = ds.map(encode, batched=True, remove_columns=ds.column_names,
                                      num_proc=self.preprocessing_num_workers, desc=f"tokenizing {split}",
                                      load_from_cache_file=False, fn_kwargs={"split": split, "class_names": class_names})
            labels = arrow_column(processed[split], "labels")
            low, high = pc.min_max(labels).values()
            if labels.null_count or (low.is_valid and low.as_py() < 0):
                raise UserError(f"data.label_column={label_col!r}: the {split} split has missing or negative labels "
                                f"(unlabeled test split? set data.test_split=null)")
            present[split] = sorted(pc.unique(labels).to_pylist())
            highest += [high.as_py()] if high.is_valid else []
        return processed, {"label_names": names, "max_label": int(max(highest)), "present": present}

    def _after_load(self, datasets: DatasetDict, meta: dict[str, Any]) -> None:
        self.label_names, self.max_label = meta["label_names"], meta["max_label"]
        if self.label_names:
            self.warn_missing_labels(self.label_names, meta.get("present", {}))
        self.num_labels = len(self.label_names) if self.label_names else self.max_label + 1
        # Same tensors as transformers' DataCollatorWithPadding, ~9x faster (see PaddingCollator).
        self.collate_fn = PaddingCollator(self.tokenizer, pad_to_multiple_of=self.pad_to_multiple_of)
