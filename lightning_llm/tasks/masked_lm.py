"""Masked language modelling (BERT-style pretraining): 15% masking (80/10/10), accuracy on masked tokens.

BERT-style masked-LM pretraining (from scratch or continued); its `hf_model/` export initialises classifiers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from itertools import chain
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from transformers import AutoModelForMaskedLM

from lightning_llm import registry
from lightning_llm.config.schema import Positive
from lightning_llm.data.masking import MaskingCollator, check_mlm_tokenizer
from lightning_llm.modules.base import HFTaskModule


class MaskedTokenCorpus:
    """What a packed text corpus (`TextCorpusDataModule`) does for masked LM: documents are separated by the
    tokenizer's own [CLS]/[SEP], the baseline is the most frequent non-special training token, and masks are
    drawn anew for every training batch but fixed per batch for validation/test (`MaskingCollator`)."""

    def check(self, corpus: Any) -> None:
        """Fail before minutes of tokenizing: the tokenizer must have a mask token (and word boundaries for
        whole-word masking)."""
        if corpus.tokenizer is not None:
            check_mlm_tokenizer(corpus.tokenizer, corpus.whole_word_mask)

    def separator(self, tokenizer: Any) -> int | None:
        return None  # the tokenizer adds [CLS]/[SEP] itself

    def statistics(self, corpus: Any, processed: Any) -> dict[str, Any]:
        if "train" not in processed:
            return {}
        return {"majority_token_id": majority_token_id(processed["train"], corpus.tokenizer)}

    def model_kwargs(self, meta: Mapping[str, Any]) -> dict[str, Any]:
        return {"majority_token_id": meta.get("majority_token_id")}

    def collators(self, corpus: Any) -> tuple[Any, Any]:
        train, fixed = (MaskingCollator(corpus.tokenizer, mlm_probability=corpus.mlm_probability,
                                        whole_word_mask=corpus.whole_word_mask,
                                        pad_to_multiple_of=corpus.pad_to_multiple_of, seed=corpus.seed,
                                        deterministic=deterministic)
                        for deterministic in (False, True))
        return train, fixed


def majority_token_id(train: Any, tokenizer: Any, max_tokens: int = 10_000_000) -> int:
    """The most frequent non-special token of (the first `max_tokens` of) a tokenized training split."""
    counts, seen = np.zeros(len(tokenizer), dtype=np.int64), 0
    for batch in train.iter(batch_size=1000):
        ids = np.fromiter(chain.from_iterable(batch["input_ids"]), dtype=np.int64)
        counts += np.bincount(ids, minlength=len(counts))[:len(counts)]
        seen += len(ids)
        if seen >= max_tokens:
            break
    counts[tokenizer.all_special_ids] = -1
    return int(counts.argmax())


class MaskedLMModule(HFTaskModule):
    """Logs `train/loss`, and for `val`/`test`: `loss` (mean NLL per masked token, fp32), `ppl` = exp(loss), a
    pseudo-perplexity over masked positions (not comparable with a causal LM's), `mlm_acc` (accuracy on masked
    positions) and `mlm_majority_acc`: the accuracy of always guessing the most frequent non-special training
    token (`majority_token_id`, from the data module) at the same masked positions, the baseline `mlm_acc` must
    beat."""

    auto_class = AutoModelForMaskedLM
    task = "masked_lm"
    tokenizer_kind = "wordpiece"
    architecture_suffixes = ("ForMaskedLM",)
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

    def count_targets(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return (batch["labels"] != -100).sum()  # the masked positions: the loss is their mean

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


registry.register(MaskedLMModule, legacy={"lightning_llm.modules.masked_lm.MaskedLMModule": MaskedLMModule})
