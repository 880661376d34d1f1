"""BERT-style masked-LM pretraining (from scratch or continued); its `hf_model/` export initialises classifiers."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from transformers import AutoModelForMaskedLM

from lightning_llm.config.schema import Positive
from lightning_llm.modules.base import HFTaskModule


class MaskedLMModule(HFTaskModule):
    """Logs `train/loss`, and for `val`/`test`: `loss` (mean NLL per masked token, fp32), `ppl` = exp(loss), a
    pseudo-perplexity over masked positions (not comparable with a causal LM's), `mlm_acc` (accuracy on masked
    positions) and `mlm_majority_acc`: the accuracy of always guessing the most frequent non-special training
    token (`majority_token_id`, from the data module) at the same masked positions, the baseline `mlm_acc` must
    beat."""

    auto_class = AutoModelForMaskedLM
    task = "masked_lm"
    tokenizer_kind = "wordpiece"
    optimized_metric = ("val/mlm_acc", "max")  # accuracy on masked positions (higher is better)
    data_kwargs = frozenset({"majority_token_id"})

    def __init__(self, *, tokenizer_vocab_size: Positive[int] = 4000, learning_rate: Positive[float] = 5e-4,
                 majority_token_id: int | None = None, **kwargs: Any) -> None:
        super().__init__(tokenizer_vocab_size=tokenizer_vocab_size, learning_rate=learning_rate, **kwargs)

    def task_config(self) -> dict[str, Any]:
        # From scratch, special ids the tokenizer did not give (builders passes pad/bos/eos) would keep the
        # architecture's defaults, e.g. ModernBERT's 50281.., outside a corpus-trained vocabulary: unset them.
        if self.hparams.pretrained_model_name_or_path or self.hparams.hf_config is not None:
            return {}
        given = self.hparams.special_token_ids or {}
        return {key: None for key in ("bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id")
                if key not in given}

    def make_metrics(self) -> nn.ModuleDict:
        # Token-weighted means over masked positions; torchmetrics states sum across DDP ranks.
        return nn.ModuleDict({"nll": MeanMetric(), "mlm_acc": MeanMetric(), "mlm_majority_acc": MeanMetric()})

    def update_metrics(self, metrics: nn.ModuleDict, batch: dict[str, torch.Tensor]) -> None:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        masked = batch["labels"] != -100
        logits = self.model(**inputs).logits[masked].float()
        targets = batch["labels"][masked]
        metrics["nll"].update(F.cross_entropy(logits, targets, reduction="none"))
        metrics["mlm_acc"].update((logits.argmax(-1) == targets).float())
        if self.hparams.majority_token_id is not None:
            metrics["mlm_majority_acc"].update((targets == self.hparams.majority_token_id).float())

    def compute_metrics(self, metrics: nn.ModuleDict) -> dict[str, Any]:
        nll = float(metrics["nll"].compute())
        values = {"loss": nll, "ppl": math.exp(min(nll, 80.0)), "mlm_acc": float(metrics["mlm_acc"].compute())}
        if metrics["mlm_majority_acc"].update_count:
            values["mlm_majority_acc"] = float(metrics["mlm_majority_acc"].compute())
        return values

    def fit_summary(self, metrics: Mapping[str, Any]) -> str | None:
        acc, baseline = metrics.get("val/mlm_acc"), metrics.get("val/mlm_majority_acc")
        if acc is None or baseline is None:
            return None
        return f"val/mlm_acc {float(acc):.4f} vs most-frequent-token baseline {float(baseline):.4f}"
