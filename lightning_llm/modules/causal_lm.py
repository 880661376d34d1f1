"""GPT-style causal language modelling (pretrained or from scratch) with split-level perplexity."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import Metric, MinMetric
from transformers import AutoModelForCausalLM

from lightning_llm.modules.base import HFTaskModule

IGNORE_INDEX = -100
# The unigram baseline reads at most this many training tokens: enough for stable frequencies, bounded on huge corpora.
_UNIGRAM_MAX_TRAIN_TOKENS = 50_000_000


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


def unigram_perplexity(train_rows: Iterable[Any], eval_rows: Iterable[Any], vocab_size: int,
                       max_train_tokens: int = _UNIGRAM_MAX_TRAIN_TOKENS) -> float:
    """Perplexity of an add-one smoothed unigram model (training-token frequencies) on `eval_rows`.

    Counts the same targets as `NextTokenMetrics` (every token of a row but the first), so the two are comparable.
    """
    counts, seen = np.zeros(vocab_size, dtype=np.int64), 0
    for row in train_rows:
        ids = np.asarray(row, dtype=np.int64)
        counts += np.bincount(ids, minlength=vocab_size)[:vocab_size]
        seen += ids.size
        if seen >= max_train_tokens:
            break
    log_probs = np.log(counts + 1.0) - math.log(counts.sum() + vocab_size)
    nll, n = 0.0, 0
    for row in eval_rows:
        targets = np.asarray(row, dtype=np.int64)[1:]
        nll -= float(log_probs[targets].sum())
        n += targets.size
    return math.exp(nll / n) if n else float("nan")


def _rows(dataset: Any) -> Iterable[Any]:
    """`input_ids` rows of a `datasets.Dataset`, read in numpy batches (fast for packed blocks)."""
    for batch in dataset.select_columns(["input_ids"]).with_format("numpy").iter(batch_size=1024):
        yield from batch["input_ids"]


class CausalLMModule(HFTaskModule):
    """Logs `train/loss`; `val/loss`, `val/ppl`, `val/token_acc`, `val/ppl_best`, `val/unigram_ppl`;
    `test/loss`, `test/ppl`, `test/token_acc`. `*/loss` is the token-weighted mean next-token NLL of the split
    and `*/ppl = exp(*/loss)`."""

    auto_class = AutoModelForCausalLM
    task = "causal_lm"
    tokenizer_kind = "bpe"

    def __init__(self, *, model_type: str = "gpt2", **kwargs: Any) -> None:
        super().__init__(model_type=model_type, **kwargs)
        self.val_metrics, self.test_metrics = NextTokenMetrics(), NextTokenMetrics()
        self.val_ppl_best = MinMetric()
        self.unigram_ppl: float | None = None

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.model(**batch).loss  # HF shifts the labels and ignores -100
        self.log_train_loss(loss)
        return loss

    def _eval_step(self, batch: dict[str, torch.Tensor], metrics: NextTokenMetrics) -> None:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        metrics.update(self.model(**inputs).logits, batch["labels"])

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics)

    def _log_split(self, metrics: NextTokenMetrics, stage: str) -> dict[str, torch.Tensor]:
        values = {f"{stage}/{k}": v for k, v in metrics.compute().items()}
        metrics.reset()
        self.log_dict(values, prog_bar=stage == "val")
        return values

    def on_validation_epoch_end(self) -> None:
        values = self._log_split(self.val_metrics, "val")
        if not self.trainer.sanity_checking:
            self.val_ppl_best.update(values["val/ppl"])
            self.log("val/ppl_best", self.val_ppl_best.compute())
        if self.unigram_ppl is not None:
            self.log("val/unigram_ppl", self.unigram_ppl)

    def on_test_epoch_end(self) -> None:
        self._log_split(self.test_metrics, "test")

    def on_fit_start(self) -> None:
        """The baseline val/ppl must beat: a unigram model of the training tokens (cheap, once per fit)."""
        datasets = getattr(getattr(self.trainer, "datamodule", None), "datasets", None)
        if datasets is not None and "train" in datasets and "validation" in datasets:
            vocab = self.hparams.vocab_size or self.model.config.vocab_size
            self.unigram_ppl = unigram_perplexity(_rows(datasets["train"]), _rows(datasets["validation"]), vocab)

    def on_fit_end(self) -> None:
        ppl = self.trainer.callback_metrics.get("val/ppl")
        if self.trainer.is_global_zero and ppl is not None and self.unigram_ppl is not None:
            print(f"val/ppl {float(ppl):.3f} vs unigram baseline {self.unigram_ppl:.3f} "
                  f"(add-one smoothed training-token frequencies, whole validation split)")
