"""Sequence classification: text (or text pairs) -> one label, a set of labels, or a number. Data from
CSV/JSON/JSONL/parquet or the hub; BERT-style models (fine-tuned or from scratch) with epoch-level torchmetrics.

Three problem types, transformers' `problem_type` names (the HF config carries it, so the model's own loss follows):
- `single_label_classification`: one label per row (string, ClassLabel or integer); cross-entropy; `acc`, `f1`
  (macro); baseline: the majority training label.
- `multi_label_classification`: a list of labels per row (JSON/JSONL/parquet lists, or a string split on
  `data.label_separator`, e.g. `sports|politics` in a CSV); BCE with logits on multi-hot targets; `f1_micro`,
  `f1_macro`, `subset_acc` (exact match) at `model.threshold`; baseline: each label's majority value in training.
- `regression`: a number per row, `num_labels=1`; MSE; `mse`, `rmse`, `mae`, `pearson`, `spearman`; baseline:
  the training mean.
`model.problem_type=null` infers it from the training labels (lists -> multi-label, floating-point numbers ->
regression, integers and strings -> single-label); an explicit one is checked against the data.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import torch
from datasets import ClassLabel, Dataset, DatasetDict
from omegaconf import DictConfig
from torchmetrics import (
    CatMetric,
    MeanAbsoluteError,
    MeanMetric,
    MeanSquaredError,
    MetricCollection,
    PearsonCorrCoef,
    SpearmanCorrCoef,
)
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MultilabelExactMatch,
    MultilabelF1Score,
)
from torchmetrics.functional.classification import multilabel_f1_score
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from lightning_llm import registry
from lightning_llm.config.schema import Positive, UnitFraction
from lightning_llm.data.base import CachedTextDataModule, arrow_column
from lightning_llm.data.padding import PaddingCollator, auto_pad_multiple
from lightning_llm.data.sources import require_nonempty
from lightning_llm.errors import UserError, require
from lightning_llm.modules.base import HFTaskModule
from lightning_llm.runtime.inputs import batches, file_column, model_max_length, read_rows, text_lines

SINGLE, MULTI, REGRESSION = "single_label_classification", "multi_label_classification", "regression"
ROW = "row"  # an evaluation example's row in its split: a batch key the model never sees
ProblemType = Literal["single_label_classification", "multi_label_classification", "regression"]


def _is_number(value: Any) -> bool:
    """A label regression can read: a number, or a string `float()` reads (an error names the row that is not)."""
    if isinstance(value, bool):
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


class TextClassificationDataModule(CachedTextDataModule):
    """Tokenized classification splits with `labels`: class ids (single-label), multi-hot float vectors
    (multi-label) or floats (regression); see the module docstring for how the problem type is chosen.

    Label names come from `label_names`, a `ClassLabel` feature, or the sorted distinct string labels of the
    training split (multi-label: of its lists); they end up in the exported model's `id2label`/`label2id`.
    `llm-eval` passes a checkpoint's own names and problem type, so a test file with a subset of the labels, in any
    order, is encoded with the model's ids (a `ClassLabel` feature whose names differ from them is mapped through
    the names).
    """

    objectives = frozenset({"classification"})
    _bundled = {"train": "reviews_train.csv", "validation": "reviews_validation.csv", "test": "reviews_test.csv"}

    def __init__(self, *, text_column: str = "text", text_pair_column: str | None = None,
                 label_column: str = "label", label_names: list[str] | None = None,
                 problem_type: ProblemType | None = None, label_separator: str | None = None,
                 max_length: Positive[int] = 128, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.text_column, self.text_pair_column, self.label_column = text_column, text_pair_column, label_column
        self.label_names = list(label_names) if label_names else None
        # The model's (`data.problem_type` follows `model.problem_type`); null: inferred from the training labels.
        self.problem_type = problem_type
        self._problem_type_given = problem_type is not None  # else inferred from the labels (errors say which)
        # A string label holding several labels (CSV cells like `sports|politics`): multi-label.
        self.label_separator = label_separator or None
        self.max_length = max_length
        self.num_labels: int | None = None
        self.baseline: float | None = None
        self.collate_fn = None  # set once a tokenizer is known (see setup)

    def model_kwargs(self) -> dict[str, Any]:
        """The label count the data needs (distinct names, else the largest integer label + 1; 1 for regression),
        the names, the problem type and the baseline score."""
        return {"num_labels": self.num_labels, "label_names": self.label_names, "problem_type": self.problem_type,
                "baseline_score": self.baseline}

    def _processing_params(self) -> dict[str, Any]:
        return {"text": self.text_column, "pair": self.text_pair_column, "label": self.label_column,
                "label_names": self.label_names, "max_length": self.max_length, "problem_type": self.problem_type,
                "separator": self.label_separator}

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

    # ----------------------------------------------------------------- what the labels are
    def _kind(self, ds: Dataset) -> str:
        """What a split's label column holds: `list`, `string` (split on `label_separator`: `list`), `whole`
        (integers, ClassLabel ids), `whole_float` (floats, all whole), `fraction` (floats, not all whole), `missing`
        or `other`."""
        column = arrow_column(ds, self.label_column)
        kind = column.type
        if pa.types.is_null(kind):  # no label at all: encoding names the first row
            return "missing"
        if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
            return "list"
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            return "list" if self.label_separator else "string"
        if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
            return "whole"
        if pa.types.is_floating(kind):
            whole = pc.all(pc.equal(pc.floor(column), column)).as_py()
            return "whole_float" if whole in (True, None) else "fraction"
        return "string" if pa.types.is_dictionary(kind) else "other"

    def _mismatch(self, ds: Dataset, split: str, need: str, bad: Any) -> UserError:
        """One line naming the first row whose label `bad(value)` says does not fit (or the column's type when
        every value would fit, e.g. numbers written as strings)."""
        where = f"data.label_column={self.label_column!r} ({self.describe_split(split)})"
        setting = f"model.problem_type={self.problem_type}" + ("" if self._problem_type_given else
                                                                " (inferred from the train split)")
        found = next(((i, v) for i, v in enumerate(ds[self.label_column]) if bad(v)), None)
        holds = f"row {found[0]} holds {found[1]!r}" if found else \
            f"holds {arrow_column(ds, self.label_column).type} values"
        return UserError(f"{where} {holds}: {setting} needs {need}")

    def _problem_type(self, raw: DatasetDict) -> str:
        """The problem type the labels say (null `problem_type`), or the configured one checked against every
        split: a mismatch is one line naming the column, the split and the first row that does not fit."""
        kinds = {split: self._kind(ds) for split, ds in raw.items()}
        if self.problem_type is None:
            train = kinds.get("train") or next(iter(kinds.values()))
            # Floats are numbers to predict even when all whole (prices, 1.0-5.0 scores); integers are classes.
            inferred = {"list": MULTI, "fraction": REGRESSION, "whole_float": REGRESSION}.get(train, SINGLE)
            if train == "other":
                raise UserError(f"data.label_column={self.label_column!r}: labels must be strings, integers, "
                                f"numbers or lists of labels, not {arrow_column(raw['train'], self.label_column).type}")
            self.problem_type = inferred
        not_list = lambda v: not isinstance(v, (list, str))  # noqa: E731
        for split, kind in kinds.items():
            ds = raw[split]
            if kind == "missing":
                continue
            if self.problem_type == MULTI and kind != "list":
                hint = " (a string of several labels: set data.label_separator)" if kind == "string" else ""
                raise self._mismatch(ds, split, f"a list of labels per row{hint}", not_list)
            if self.problem_type == SINGLE and kind in ("list", "fraction", "other"):
                raise self._mismatch(ds, split, "one label per row (a string or a whole number)",
                                     lambda v: isinstance(v, list) or (isinstance(v, float) and not v.is_integer()))
            if self.problem_type == REGRESSION and kind not in ("whole", "whole_float", "fraction"):
                raise self._mismatch(ds, split, "a number per row", lambda v: not _is_number(v))
        return self.problem_type

    def _list_class_names(self, ds: Dataset) -> list[str] | None:
        """The names of a `Sequence(ClassLabel)` label column (a multi-label hub data set's ids), else None."""
        feature = getattr(ds.features[self.label_column], "feature", None)
        return list(feature.names) if isinstance(feature, ClassLabel) else None

    def _split_labels(self, value: Any) -> list[str] | None:
        if value is None:
            return None
        if isinstance(value, str):
            return [part.strip() for part in value.split(self.label_separator) if part.strip()]
        return [str(v) for v in value]

    def _label_names(self, raw: DatasetDict) -> list[str] | None:
        if self.label_names:
            return self.label_names
        source = raw["train"] if "train" in raw else next(iter(raw.values()))
        if self.problem_type == REGRESSION:
            return None
        if self.problem_type == MULTI:
            declared = self._list_class_names(source)
            if declared is not None:
                return declared
            names = {name for value in source[self.label_column] for name in self._split_labels(value) or []}
            numeric = all(name.lstrip("-").isdigit() for name in names)  # 2 before 10
            return sorted(names, key=int) if numeric else sorted(names)
        feature = source.features[self.label_column]
        if isinstance(feature, ClassLabel):
            return list(feature.names)
        if feature.dtype in ("string", "large_string"):
            values = pc.unique(arrow_column(source, self.label_column)).to_pylist()
            return sorted(str(v) for v in values if v is not None)
        return None

    # ----------------------------------------------------------------- encoding
    def _process(self, raw: DatasetDict) -> tuple[DatasetDict, dict[str, Any]]:
        self._check_columns(raw)
        problem = self._problem_type(raw)
        names = self._label_names(raw)
        label_to_id = {name: i for i, name in enumerate(names)} if names else None
        tok, text_col, pair_col, label_col = self.tokenizer, self.text_column, self.text_pair_column, self.label_column

        def unknown_labels(unknown: set[str], split: str) -> UserError:
            return UserError(f"data ({self.describe_split(split)}): labels {sorted(unknown)[:5]} in column "
                             f"{label_col!r} are not among the model's labels {names}")

        def encode(batch: dict[str, list], indices: list[int], split: str, label_key: str,
                   class_names: list[str] | None, list_names: list[str] | None) -> dict[str, list]:
            texts = [t or "" for t in batch[text_col]]
            pairs = [t or "" for t in batch[pair_col]] if pair_col else None
            out = tok(texts, pairs, truncation=True, max_length=self.max_length)
            if split != "train":  # evaluation runs longest first: predictions_<stage>.jsonl goes back to row order
                out[ROW] = list(indices)
            labels = batch[label_key]
            missing = next((i for i, v in zip(indices, labels) if v is None), None)
            if missing is not None and not (problem == MULTI and self.label_separator):  # an empty cell: none
                raise UserError(f"data.label_column={label_col!r}: the {split} split has missing or negative labels "
                                f"(row {missing} has none; unlabeled test split? set data.test_split=null)")
            if problem == REGRESSION:
                out["labels"] = [float(v) for v in labels]
                return out
            if problem == MULTI:
                if label_to_id is None:
                    raise UserError(f"data.label_column={label_col!r}: no labels in the train split (every row's "
                                    f"list is empty)")
                rows = [[list_names[i] for i in v or []] if list_names else self._split_labels(v) or [] for v in labels]
                unknown = {name for row in rows for name in row if name not in label_to_id}
                if unknown:
                    raise unknown_labels(unknown, split)
                hot = []
                for row in rows:
                    vector = [0.0] * len(label_to_id)
                    for name in row:
                        vector[label_to_id[name]] = 1.0
                    hot.append(vector)
                out["labels"] = hot
                return out
            if class_names is not None:  # this split's ClassLabel ids -> names, then the model's ids below
                labels = [class_names[v] if v >= 0 else None for v in labels]
            if label_to_id is not None and any(isinstance(v, str) for v in labels):
                unknown = {str(v) for v in labels if v is not None and str(v) not in label_to_id}
                if unknown:
                    raise unknown_labels(unknown, split)
                labels = [None if v is None else label_to_id[str(v)] for v in labels]
            out["labels"] = [None if v is None else int(v) for v in labels]
            return out

        processed, present, highest = DatasetDict(), {}, []
        for split, ds in raw.items():
            feature = ds.features[label_col]
            class_names = feature.names if isinstance(feature, ClassLabel) and names and feature.names != names \
                else None
            list_names, label_key = self._list_class_names(ds), label_col
            if label_col == "labels":  # the output's name: `map` would cast the encoded labels to this feature
                ds, label_key = ds.rename_column(label_col, "_labels_given"), "_labels_given"
            processed[split] = ds.map(encode, batched=True, with_indices=True, remove_columns=ds.column_names,
                                      num_proc=self.preprocessing_num_workers, desc=f"tokenizing {split}",
                                      load_from_cache_file=False,
                                      fn_kwargs={"split": split, "label_key": label_key, "class_names": class_names,
                                                 "list_names": list_names})
            labels = arrow_column(processed[split], "labels")
            if problem == REGRESSION:
                low, high = pc.min_max(labels).values()
                if split != "train" and len(labels) > 1 and low.as_py() == high.as_py():  # e.g. glue/stsb's test: -1
                    raise UserError(f"data.label_column={label_col!r}: every label of the {split} split is "
                                    f"{low.as_py()} (unlabeled {split} split? set data.{split}_split=null)")
                continue
            if problem == MULTI:
                hot = torch.tensor(labels.to_pylist())
                present[split] = sorted(set(hot.nonzero()[:, 1].tolist())) if hot.numel() else []
                continue
            low, high = pc.min_max(labels).values()
            if labels.null_count or (low.is_valid and low.as_py() < 0):
                raise UserError(f"data.label_column={label_col!r}: the {split} split has missing or negative labels "
                                f"(unlabeled test split? set data.test_split=null)")
            present[split] = sorted(pc.unique(labels).to_pylist())
            highest += [high.as_py()] if high.is_valid else []
        max_label = len(names) - 1 if problem == MULTI and names else int(max(highest)) if highest else 0
        return processed, {"label_names": names, "max_label": max_label, "present": present,
                           "problem_type": problem, "baseline": self._baseline(processed, problem, names)}

    @staticmethod
    def _baseline(processed: DatasetDict, problem: str, names: list[str] | None) -> float | None:
        """The score, on the validation split, of a model that ignores the text (what `fit_summary` reads the
        model's validation metric against): single-label, the accuracy of the majority training label; multi-label,
        the micro F1 of predicting each label's majority value in training; regression, the RMSE of predicting
        the training mean."""
        if "train" not in processed or "validation" not in processed:
            return None
        train = torch.tensor(processed["train"]["labels"])
        valid = torch.tensor(processed["validation"]["labels"])
        if problem == REGRESSION:
            return float((valid.double() - train.double().mean()).pow(2).mean().sqrt())
        if problem == MULTI:
            guess = (train.mean(0) > 0.5).float().expand_as(valid)
            return float(multilabel_f1_score(guess, valid.long(), num_labels=valid.shape[1], average="micro"))
        return float((valid == torch.mode(train).values).float().mean())

    def _after_load(self, datasets: DatasetDict, meta: dict[str, Any]) -> None:
        self.label_names, self.max_label = meta["label_names"], meta["max_label"]
        self.problem_type, self.baseline = meta["problem_type"], meta["baseline"]
        if self.label_names:
            self.warn_missing_labels(self.label_names, meta.get("present", {}))
        if self.problem_type == REGRESSION:
            self.num_labels = 1
        else:
            self.num_labels = len(self.label_names) if self.label_names else self.max_label + 1
        # Same tensors as transformers' DataCollatorWithPadding, faster (see PaddingCollator); multi-hot
        # label vectors are stacked as they are (floats), not padded.
        self.collate_fn = PaddingCollator(self.tokenizer, pad_to_multiple_of=self.pad_to_multiple_of,
                                          stacked=("labels",))


# Per problem type: (monitor, optimized metric, best-so-far metric), the baseline's metric name.
_METRICS = {
    SINGLE: (("val/acc", "max"), ("val/acc_best", "max"), ("val/acc", "max"), "val/majority_acc"),
    MULTI: (("val/f1_micro", "max"), ("val/f1_micro_best", "max"), ("val/f1_micro", "max"), "val/majority_f1_micro"),
    REGRESSION: (("val/rmse", "min"), ("val/rmse_best", "min"), ("val/rmse", "min"), "val/mean_rmse"),
}
_HEADLINE = {SINGLE: ("acc", "majority-label", "every text given the most frequent training label"),
             MULTI: ("f1_micro", "per-label majority", "every text given each label's majority value in training"),
             REGRESSION: ("rmse", "training-mean", "every text given the mean training value")}


class SequenceClassificationModule(HFTaskModule):
    """Logs `train/loss`, `val/loss` and, by problem type (same names under `test/`): single-label `acc`, `f1`
    (macro), `acc_best`; multi-label `f1_micro`, `f1_macro`, `subset_acc` (exact match), `f1_micro_best`;
    regression `mse`, `rmse`, `mae`, `pearson`, `spearman`, `rmse_best`. The data's baseline is logged as
    `val/majority_acc`, `val/majority_f1_micro` or `val/mean_rmse`."""

    auto_class = AutoModelForSequenceClassification
    task = "classification"
    tokenizer_kind = "wordpiece"
    architecture_suffixes = ("ForSequenceClassification",)
    peft_task_type, lora_embeddings = "SEQ_CLS", True
    explain_as, compressible = "label", True
    prediction_settings = ("max_length", "threshold")

    @staticmethod
    def predict(model: Any, tokenizer: Any, cfg: Any, settings: Mapping[str, Any], device: str) -> Any:
        """Per text (`text_column` of a CSV/TSV/JSON(L) file, else one text per line), JSONL: single-label
        `{"text", "label", "probability"}`; multi-label `{"text", "labels", "probabilities"}` (the labels whose
        probability is above `threshold`, as torchmetrics binarizes; default the training run's `model.threshold`);
        regression `{"text", "value"}`."""
        texts = _texts(cfg)
        require(bool(texts), f"input_file: no texts in {cfg.input_file}")
        max_length = model_max_length(model, tokenizer, cfg.max_length or settings.get("max_length"))
        threshold = cfg.get("threshold")
        threshold = float(threshold if threshold is not None else settings.get("threshold", 0.5))
        require(0.0 <= threshold <= 1.0, f"threshold must be in [0, 1], got {threshold}")
        return predict_labels(model, tokenizer, texts, max_length, cfg.batch_size, device, threshold)
    monitor, optimized_metric, best_metric = _METRICS[SINGLE][:3]  # per instance: its problem type's
    data_kwargs = frozenset({"label_names", "baseline_score"})
    eval_data_settings = frozenset({"label_names", "problem_type"})
    data_settled = frozenset({"problem_type"})

    def __init__(self, *, num_labels: Positive[int] | None = None, label_names: list[str] | None = None,
                 problem_type: ProblemType | None = None, threshold: UnitFraction = 0.5,
                 baseline_score: float | None = None, tokenizer_vocab_size: Positive[int] = 4000,
                 learning_rate: Positive[float] = 5e-4, warmup_ratio: UnitFraction = 0.1, **kwargs: Any) -> None:
        self._problem_type = problem_type or SINGLE
        self._num_labels = 1 if self._problem_type == REGRESSION else \
            num_labels or (len(label_names) if label_names else 2)
        self._label_names = list(label_names) if label_names else None
        self._threshold = threshold
        self.monitor, self.optimized_metric, self.best_metric, baseline_name = _METRICS[self._problem_type]
        self.baseline_metrics = {"baseline_score": baseline_name}
        super().__init__(tokenizer_vocab_size=tokenizer_vocab_size, learning_rate=learning_rate,
                         warmup_ratio=warmup_ratio, **kwargs)

    @classmethod
    def metric_defaults(cls, settings: Mapping[str, Any]) -> dict[str, tuple[str, str] | None]:
        """Single-label: val/acc (max); multi-label: val/f1_micro (max); regression: val/rmse (min)."""
        monitor, optimized, best, _ = _METRICS[settings.get("problem_type") or SINGLE]
        return {"monitor": monitor, "optimized_metric": optimized, "best_metric": best}

    @classmethod
    def reconcile(cls, configured: Mapping[str, Any], from_data: Mapping[str, Any]) -> dict[str, Any]:
        """`num_labels` null = the data's count; a label the model has no output for fails now; the problem type
        the data was encoded for is the model's."""
        kwargs = super().reconcile(configured, from_data)
        given, found = configured.get("problem_type"), from_data.get("problem_type")
        if given and found and given != found:
            raise UserError(f"model.problem_type={given} but the data was encoded as {found}")
        needed, names = from_data.get("num_labels"), kwargs.get("label_names")
        if kwargs.get("problem_type") == REGRESSION:
            kwargs["num_labels"] = 1
        elif kwargs.get("problem_type") == MULTI and needed and kwargs["num_labels"] != needed:
            raise UserError(f"model.num_labels={kwargs['num_labels']} but the data has {needed} labels: set "
                            f"model.num_labels=null")
        if needed and kwargs["num_labels"] < needed:
            raise UserError(f"data: label {needed - 1} is outside model.num_labels={kwargs['num_labels']}")
        kwargs["label_names"] = names if names and len(names) == kwargs["num_labels"] else None
        return kwargs

    def task_config(self) -> dict[str, Any]:
        names = self._label_names or [f"LABEL_{i}" for i in range(self._num_labels)]
        return {"num_labels": self._num_labels, "id2label": dict(enumerate(names)),
                "label2id": {name: i for i, name in enumerate(names)}, "problem_type": self._problem_type}

    def make_metrics(self) -> MetricCollection:
        n, threshold = self._num_labels, self._threshold
        if self._problem_type == MULTI:
            metrics = {"f1_micro": MultilabelF1Score(n, threshold=threshold, average="micro"),
                       "f1_macro": MultilabelF1Score(n, threshold=threshold, average="macro"),
                       "subset_acc": MultilabelExactMatch(n, threshold=threshold)}
        elif self._problem_type == REGRESSION:
            with warnings.catch_warnings():  # "will save all targets and predictions": so does predictions_*.jsonl
                warnings.filterwarnings("ignore", message=".*will save all targets and predictions", category=UserWarning)
                spearman = SpearmanCorrCoef()
            metrics = {"mse": MeanSquaredError(), "rmse": MeanSquaredError(squared=False), "mae": MeanAbsoluteError(),
                       "pearson": PearsonCorrCoef(), "spearman": spearman}
        else:
            metrics = {"acc": MulticlassAccuracy(n, average="micro"), "f1": MulticlassF1Score(n, average="macro")}
        # Every prediction and target of the stage (gathered over DDP ranks): predictions_<stage>.jsonl.
        # NaN kept (CatMetric drops it by default, which would shift every later row); row numbers in float64.
        kept = {"predicted": CatMetric(nan_strategy="disable"), "target": CatMetric(nan_strategy="disable"),
                ROW: CatMetric(nan_strategy="disable").set_dtype(torch.float64)}
        return MetricCollection({"loss": MeanMetric(), **metrics, **kept}, compute_groups=False)

    def update_metrics(self, metrics: MetricCollection, batch: dict[str, torch.Tensor]) -> None:
        out = self.model(**{k: v for k, v in batch.items() if k != ROW})
        labels = batch["labels"]
        metrics["loss"].update(out.loss.detach(), weight=labels.shape[0])
        logits = out.logits.float()
        if self._problem_type == MULTI:
            preds, target = logits.sigmoid(), labels.long()  # probabilities: the metrics apply the threshold
        elif self._problem_type == REGRESSION:
            preds, target = logits.squeeze(-1), labels.float()
        else:
            preds, target = logits.argmax(-1), labels
        for name, metric in metrics.items():
            if name not in ("loss", "predicted", "target", ROW):
                metric.update(preds, target)
        metrics["predicted"].update(preds.detach())
        metrics["target"].update(target)
        metrics[ROW].update(batch[ROW])

    def compute_metrics(self, metrics: MetricCollection) -> dict[str, Any]:
        """The metrics, and `predictions_<stage>.jsonl` in the run directory: one `{"row", "predicted", "target"}`
        per example in the split's row order (label names; multi-label: the labels above the threshold; regression:
        the numbers), what scikit-learn or any other scorer can recompute the metrics from. Each validation
        rewrites the val file: after fitting it scores as `results.json`'s `val_last`; the test file is the
        tested (best) checkpoint's."""
        values = {name: metric.compute() for name, metric in metrics.items()
                  if name not in ("predicted", "target", ROW)}
        if not self.trainer.sanity_checking:
            predicted, target, rows = (metrics[name].compute() for name in ("predicted", "target", ROW))
            self.write_predictions("test" if self.trainer.testing else "val", self._records(predicted, target, rows))
        return values

    def _records(self, predicted: torch.Tensor, target: torch.Tensor, rows: torch.Tensor) -> list[dict[str, Any]]:
        names = self._label_names or [f"LABEL_{i}" for i in range(self._num_labels)]
        # CatMetric returns a 0-d tensor for a stage of one example: one row per example again.
        shape = (-1, self._num_labels) if self._problem_type == MULTI else (-1,)
        predicted, target, rows = predicted.reshape(shape), target.reshape(shape), rows.reshape(-1).long()
        if self._problem_type == REGRESSION:
            records = [{"predicted": p, "target": t} for p, t in zip(predicted.tolist(), target.tolist())]
        elif self._problem_type == MULTI:
            chosen = (predicted > self._threshold).tolist()
            records = [{"predicted": [n for n, on in zip(names, row) if on],
                        "target": [n for n, on in zip(names, truth) if on]}
                       for row, truth in zip(chosen, target.bool().tolist())]
        else:
            records = [{"predicted": names[int(p)], "target": names[int(t)]}
                       for p, t in zip(predicted.tolist(), target.tolist())]
        return sorted(({"row": row, **record} for row, record in zip(rows.tolist(), records)),
                      key=lambda record: record["row"])

    def fit_summary(self, metrics: Mapping[str, Any]) -> str | None:
        name, what, how = _HEADLINE[self._problem_type]
        value, baseline = metrics.get(f"val/{name}"), self.hparams.get("baseline_score")
        if value is None or baseline is None:
            return None
        return f"val/{name} {float(value):.4f} vs {what} baseline {baseline:.4f} ({how})"


registry.register(SequenceClassificationModule, legacy={
    "lightning_llm.modules.classification.SequenceClassificationModule": SequenceClassificationModule,
    "lightning_llm.data.classification.TextClassificationDataModule": TextClassificationDataModule})


def predict_labels(model: PreTrainedModel, tokenizer: Any, texts: list[str], max_length: int, batch_size: int,
                   device: str, threshold: float = 0.5) -> list[dict[str, Any]]:
    """Each text's prediction as the model's `problem_type` reads its logits: the most probable label and its
    softmax probability; the labels whose sigmoid probability is above `threshold`, with every label's; the value."""
    names = model.config.id2label
    problem = getattr(model.config, "problem_type", None) or SINGLE
    pad = PaddingCollator(tokenizer, auto_pad_multiple())
    records: list[dict[str, Any]] = []
    for batch in batches(texts, batch_size):
        enc = tokenizer(list(batch), truncation=True, max_length=max_length)
        features = [{k: enc[k][i] for k in enc.keys()} for i in range(len(batch))]
        tensors = {k: v.to(device) for k, v in pad(features).items()}
        with torch.inference_mode():
            logits = model(**tensors).logits.float()
        if problem == REGRESSION:
            records += [{"text": t, "value": float(v)} for t, v in zip(batch, logits[:, 0].tolist())]
        elif problem == MULTI:
            for t, row in zip(batch, logits.sigmoid().tolist()):
                records.append({"text": t, "labels": [names[i] for i, p in enumerate(row) if p > threshold],
                                "probabilities": {names[i]: p for i, p in enumerate(row)}})
        else:
            best, label = logits.softmax(-1).max(-1)
            records += [{"text": t, "label": names[int(i)], "probability": float(p)}
                        for t, i, p in zip(batch, label.tolist(), best.tolist())]
    return records


def _texts(cfg: DictConfig) -> list[str]:
    path = Path(cfg.input_file)
    if path.suffix.lower() in (".jsonl", ".json", ".csv", ".tsv"):
        return [str(t) for t in file_column(read_rows(path), "text_column", cfg.text_column, path)]
    return text_lines(path)
