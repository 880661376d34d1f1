"""BERT-style sequence classification (fine-tuning or from scratch) with epoch-level torchmetrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from transformers import AutoModelForSequenceClassification

from lightning_llm.config.schema import Positive, UnitFraction
from lightning_llm.errors import UserError
from lightning_llm.modules.base import HFTaskModule


class SequenceClassificationModule(HFTaskModule):
    """Logs `train/loss`, `val/loss`, `val/acc`, `val/f1` (macro), `val/acc_best`, `test/acc`, `test/f1`."""

    auto_class = AutoModelForSequenceClassification
    task = "classification"
    tokenizer_kind = "wordpiece"
    monitor = ("val/acc", "max")
    optimized_metric = ("val/acc_best", "max")
    best_metric = ("val/acc", "max")
    data_kwargs = frozenset({"label_names"})
    eval_data_settings = frozenset({"label_names"})

    def __init__(self, *, num_labels: Positive[int] | None = None, label_names: list[str] | None = None,
                 tokenizer_vocab_size: Positive[int] = 4000, learning_rate: Positive[float] = 5e-4,
                 warmup_ratio: UnitFraction = 0.1, **kwargs: Any) -> None:
        self._num_labels = num_labels or (len(label_names) if label_names else 2)
        self._label_names = list(label_names) if label_names else None
        super().__init__(tokenizer_vocab_size=tokenizer_vocab_size, learning_rate=learning_rate,
                         warmup_ratio=warmup_ratio, **kwargs)

    @classmethod
    def reconcile(cls, configured: Mapping[str, Any], from_data: Mapping[str, Any]) -> dict[str, Any]:
        """`num_labels` null = the data's count; a label the model has no output for fails now."""
        kwargs = super().reconcile(configured, from_data)
        needed, names = from_data.get("num_labels"), kwargs.get("label_names")
        if needed and kwargs["num_labels"] < needed:
            raise UserError(f"data: label {needed - 1} is outside model.num_labels={kwargs['num_labels']}")
        kwargs["label_names"] = names if names and len(names) == kwargs["num_labels"] else None
        return kwargs

    def task_config(self) -> dict[str, Any]:
        names = self._label_names or [f"LABEL_{i}" for i in range(self._num_labels)]
        return {"num_labels": self._num_labels, "id2label": dict(enumerate(names)),
                "label2id": {name: i for i, name in enumerate(names)}}

    def make_metrics(self) -> MetricCollection:
        n = self._num_labels
        return MetricCollection({"loss": MeanMetric(), "acc": MulticlassAccuracy(n, average="micro"),
                                 "f1": MulticlassF1Score(n, average="macro")}, compute_groups=False)

    def update_metrics(self, metrics: MetricCollection, batch: dict[str, torch.Tensor]) -> None:
        out = self.model(**batch)
        labels = batch["labels"]
        metrics["loss"].update(out.loss.detach(), weight=labels.shape[0])
        preds = out.logits.argmax(-1)
        metrics["acc"].update(preds, labels)
        metrics["f1"].update(preds, labels)
