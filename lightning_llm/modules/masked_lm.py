"""BERT-style masked-LM pretraining (from scratch or continued); its `hf_model/` export initialises classifiers."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from transformers import AutoModelForMaskedLM

from lightning_llm.modules.base import HFTaskModule


def _eval_metrics() -> nn.ModuleDict:
    # Token-weighted means over masked positions; torchmetrics states sum across DDP ranks.
    return nn.ModuleDict({"nll": MeanMetric(), "mlm_acc": MeanMetric(), "mlm_majority_acc": MeanMetric()})


class MaskedLMModule(HFTaskModule):
    """Logs `train/loss`, and for `val`/`test`: `loss` (mean NLL per masked token, fp32), `ppl` = exp(loss), a
    pseudo-perplexity over masked positions (not comparable with a causal LM's), `mlm_acc` (accuracy on masked
    positions) and `mlm_majority_acc`: the accuracy of always guessing the most frequent non-special training
    token at the same masked positions, the baseline `mlm_acc` must beat (when the data module provides
    `majority_token_id`)."""

    auto_class = AutoModelForMaskedLM
    task = "masked_lm"
    tokenizer_kind = "wordpiece"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.eval_metrics = nn.ModuleDict({"val": _eval_metrics(), "test": _eval_metrics()})

    def task_config(self) -> dict[str, Any]:
        # From scratch, special ids the tokenizer did not give (builders passes pad/bos/eos) would keep the
        # architecture's defaults, e.g. ModernBERT's 50281.., outside a corpus-trained vocabulary: unset them.
        if self.hparams.pretrained_model_name_or_path or self.hparams.hf_config is not None:
            return {}
        given = self.hparams.special_token_ids or {}
        return {key: None for key in ("bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id")
                if key not in given}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.model(**batch).loss
        self.log_train_loss(loss)
        return loss

    def _eval_step(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        masked = batch["labels"] != -100
        logits = self.model(**inputs).logits[masked].float()
        targets = batch["labels"][masked]
        metrics = self.eval_metrics[stage]
        metrics["nll"].update(F.cross_entropy(logits, targets, reduction="none"))
        metrics["mlm_acc"].update((logits.argmax(-1) == targets).float())
        majority = getattr(getattr(self.trainer, "datamodule", None), "majority_token_id", None)
        if majority is not None:
            metrics["mlm_majority_acc"].update((targets == majority).float())

    def _log_epoch(self, stage: str) -> None:
        metrics = self.eval_metrics[stage]
        nll = float(metrics["nll"].compute())
        values = {f"{stage}/loss": nll, f"{stage}/ppl": math.exp(min(nll, 80.0)),
                  f"{stage}/mlm_acc": float(metrics["mlm_acc"].compute())}
        if metrics["mlm_majority_acc"].update_count:
            values[f"{stage}/mlm_majority_acc"] = float(metrics["mlm_majority_acc"].compute())
        for metric in metrics.values():
            metric.reset()
        self.log_dict(values, prog_bar=stage == "val")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_fit_end(self) -> None:
        acc, baseline = (self.trainer.callback_metrics.get(k) for k in ("val/mlm_acc", "val/mlm_majority_acc"))
        if self.trainer.is_global_zero and acc is not None and baseline is not None:
            print(f"val/mlm_acc {float(acc):.4f} vs most-frequent-token baseline {float(baseline):.4f}")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")
