"""GPT-style causal language modelling (pretrained or from scratch) with split-level perplexity."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import Metric
from transformers import AutoModelForCausalLM

from lightning_llm.config.schema import NonNegative, Positive, UnitFraction
from lightning_llm.modules.base import HFTaskModule

IGNORE_INDEX = -100


class NextTokenMetrics(Metric):
    """Summed next-token NLL, predicted-token count and correct argmax predictions over a whole split.

    The sums are torchmetrics states (summed across DDP ranks), so `ppl = exp(total NLL / total tokens)` is
    token-weighted over the split, not a mean of per-batch perplexities. Labels are shifted here and the NLL is
    computed from fp32 logits: torchmetrics' `Perplexity` does neither and was ~4% off with bf16 logits.
    """

    full_state_update = False
    higher_is_better = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("nll_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("tokens", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("correct", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """`logits[:, t]` predicts `labels[:, t + 1]`; positions labelled -100 (padding) are not counted."""
        logits, targets = logits[:, :-1].float(), labels[:, 1:]
        mask = targets != IGNORE_INDEX
        self.nll_sum += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                        ignore_index=IGNORE_INDEX, reduction="sum").double()
        self.tokens += mask.sum()
        self.correct += ((logits.argmax(-1) == targets) & mask).sum()

    def compute(self) -> dict[str, torch.Tensor]:
        if self.tokens == 0:
            nan = torch.tensor(float("nan"))
            return {"loss": nan, "ppl": nan, "token_acc": nan}
        loss = self.nll_sum / self.tokens
        return {"loss": loss.float(), "ppl": loss.exp().float(), "token_acc": (self.correct / self.tokens).float()}


class CausalLMModule(HFTaskModule):
    """Logs `train/loss`; `val/loss`, `val/ppl`, `val/token_acc`, `val/ppl_best`, `val/unigram_ppl`;
    `test/loss`, `test/ppl`, `test/token_acc`. `*/loss` is the token-weighted mean next-token NLL of the split
    and `*/ppl = exp(*/loss)`. `baseline_ppl` (from the data module: a unigram model of the training tokens on
    the validation split) is logged as `val/unigram_ppl`, the number val/ppl must beat."""

    auto_class = AutoModelForCausalLM
    task = "causal_lm"
    tokenizer_kind = "bpe"
    optimized_metric = ("val/ppl", "min")
    best_metric = ("val/ppl", "min")
    data_kwargs = frozenset({"baseline_ppl"})
    baseline_metrics = {"baseline_ppl": "val/unigram_ppl"}

    def __init__(self, *, model_type: str = "gpt2", learning_rate: Positive[float] = 6e-4,
                 weight_decay: NonNegative[float] = 0.1, warmup_ratio: UnitFraction = 0.05,
                 adam_betas: Sequence[float] = (0.9, 0.95), lr_scheduler: str = "cosine",
                 baseline_ppl: float | None = None, **kwargs: Any) -> None:
        super().__init__(model_type=model_type, learning_rate=learning_rate, weight_decay=weight_decay,
                         warmup_ratio=warmup_ratio, adam_betas=adam_betas, lr_scheduler=lr_scheduler, **kwargs)

    def make_metrics(self) -> NextTokenMetrics:
        return NextTokenMetrics()

    def update_metrics(self, metrics: NextTokenMetrics, batch: dict[str, torch.Tensor]) -> None:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        metrics.update(self.model(**inputs).logits, batch["labels"])

    def fit_summary(self, metrics: Mapping[str, Any]) -> str | None:
        ppl, baseline = metrics.get("val/ppl"), self.hparams.baseline_ppl
        if ppl is None or baseline is None:
            return None
        return (f"val/ppl {float(ppl):.3f} vs unigram baseline {baseline:.3f} "
                f"(add-one smoothed training-token frequencies, whole validation split)")
