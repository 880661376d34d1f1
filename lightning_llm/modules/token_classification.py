"""Token classification (NER): an encoder with a per-token head, scored with seqeval over the whole split."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torchmetrics import MeanMetric, Metric
from torchmetrics.utilities import dim_zero_cat
from transformers import AutoModelForTokenClassification

from lightning_llm.config.schema import Positive, UnitFraction
from lightning_llm.errors import UserError
from lightning_llm.modules.base import HFTaskModule
from lightning_llm.runtime.extras import require_extra

_PREFIXES = ("B-", "I-", "E-", "S-", "L-", "U-")  # IOB1/IOB2/IOE/IOBES/BILOU chunk prefixes
_AVERAGES = {"micro avg", "macro avg", "weighted avg"}


class SeqevalMetric(Metric):
    """seqeval's entity-level micro precision/recall/F1, per-type F1 and token accuracy over a whole split.

    Word-level tag ids are kept per sequence (positions labelled -100 are not words) in list states reduced by
    concatenation, so under DDP every rank's sentences are gathered and scored once, as one corpus: entity F1 is
    not a mean of batch F1s. Scoring is seqeval's default mode (as transformers' run_ner and `evaluate`'s
    seqeval use it), which reads IOB1, IOB2 and IOBES tags the way seqeval does.
    """

    full_state_update = False

    def __init__(self, label_names: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.label_names = list(label_names)
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        self.add_state("lengths", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, labels: torch.Tensor) -> None:
        """`preds`, `labels`: (batch, tokens) tag ids; labels -100 where no word starts."""
        words = labels != -100
        self.preds.append(preds[words].long())
        self.target.append(labels[words].long())
        self.lengths.append(words.sum(-1).long())

    def sequences(self) -> tuple[list[list[str]], list[list[str]]]:
        """(true tags, predicted tags) per sentence, as names."""
        if isinstance(self.lengths, list) and not self.lengths:  # after a DDP sync the states are tensors
            return [], []
        lengths = dim_zero_cat(self.lengths).tolist()
        names = self.label_names
        split = [list(part) for part in (dim_zero_cat(self.target).tolist(), dim_zero_cat(self.preds).tolist())]
        out: tuple[list[list[str]], list[list[str]]] = ([], [])
        for ids, seqs in zip(split, out):
            start = 0
            for n in lengths:
                seqs.append([names[i] for i in ids[start:start + n]])
                start += n
        return out

    def compute(self) -> dict[str, float]:
        metrics = require_extra("seqeval.metrics", "ner", "model=token_classifier")
        truth, pred = self.sequences()
        if not truth:
            return {}
        values = {"precision": metrics.precision_score(truth, pred, zero_division=0),
                  "recall": metrics.recall_score(truth, pred, zero_division=0),
                  "f1": metrics.f1_score(truth, pred, zero_division=0),
                  "acc": metrics.accuracy_score(truth, pred)}
        report = metrics.classification_report(truth, pred, output_dict=True, zero_division=0)
        # Every type the tag names define, present in this split or not, so each epoch logs the same keys.
        types = {name[2:] for name in self.label_names if name[:2] in _PREFIXES} | set(report) - _AVERAGES
        for name in sorted(types):
            values[f"f1_{name}"] = report.get(name, {}).get("f1-score", 0.0)
        return {name: float(value) for name, value in values.items()}


class TokenClassificationModule(HFTaskModule):
    """Logs `train/loss` and, for `val`/`test`: `loss`, `precision`, `recall`, `f1` (seqeval, entity-level micro),
    `acc` (token accuracy over words), `f1_<TYPE>` per entity type; `val/majority_f1` and `val/majority_acc` are
    the majority-tag baseline from the data module (`baseline_f1`, `baseline_acc`)."""

    auto_class = AutoModelForTokenClassification
    task = "token_classification"
    tokenizer_kind = "wordpiece"
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
        out = self.model(**batch)
        labels = batch["labels"]
        metrics["loss"].update(out.loss.detach(), weight=int((labels != -100).sum()))
        metrics["seqeval"].update(out.logits.argmax(-1), labels)

    def compute_metrics(self, metrics: nn.ModuleDict) -> dict[str, Any]:
        return {"loss": float(metrics["loss"].compute()), **metrics["seqeval"].compute()}

    def fit_summary(self, metrics: Mapping[str, Any]) -> str | None:
        f1, baseline = metrics.get("val/f1"), self.hparams.get("baseline_f1")
        if f1 is None or baseline is None:
            return None
        acc = metrics.get("val/acc")
        tokens = f", token acc {float(acc):.4f} vs {self.hparams.baseline_acc:.4f}" if acc is not None else ""
        return f"val/f1 {float(f1):.4f} vs majority-tag baseline {baseline:.4f}{tokens} (all words tagged with the " \
               f"most frequent training tag)"
