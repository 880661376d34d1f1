"""BERT-style sequence classification (fine-tuning or from scratch) with epoch-level torchmetrics."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import MaxMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from transformers import AutoModelForSequenceClassification

from lightning_llm.modules.base import HFTaskModule


class SequenceClassificationModule(HFTaskModule):
    """Logs `train/loss`, `val/loss`, `val/acc`, `val/f1` (macro), `val/acc_best`, `test/acc`, `test/f1`."""

    auto_class = AutoModelForSequenceClassification
    task = "classification"
    tokenizer_kind = "wordpiece"

    def __init__(self, *, num_labels: int | None = None, label_names: list[str] | None = None, **kwargs: Any) -> None:
        self._num_labels = num_labels or (len(label_names) if label_names else 2)
        self._label_names = list(label_names) if label_names else None
        super().__init__(**kwargs)
        n = self.model.config.num_labels
        metrics = MetricCollection({"acc": MulticlassAccuracy(n, average="micro"),
                                    "f1": MulticlassF1Score(n, average="macro")})
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.val_acc_best = MaxMetric()

    def task_config(self) -> dict[str, Any]:
        names = self._label_names or [f"LABEL_{i}" for i in range(self._num_labels)]
        return {"num_labels": self._num_labels, "id2label": dict(enumerate(names)),
                "label2id": {name: i for i, name in enumerate(names)}}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.model(**batch).loss
        self.log_train_loss(loss)
        return loss

    def _eval_step(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        out = self.model(**batch)
        self.log(f"{stage}/loss", out.loss, on_epoch=True, prog_bar=stage == "val", sync_dist=True,
                 batch_size=batch["labels"].shape[0])
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(out.logits.argmax(-1), batch["labels"])

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        self.val_metrics.reset()
        self.log_dict(values, prog_bar=True)
        if not self.trainer.sanity_checking:
            self.val_acc_best.update(values["val/acc"])
            self.log("val/acc_best", self.val_acc_best.compute())

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute())
        self.test_metrics.reset()
