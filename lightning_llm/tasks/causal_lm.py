"""Causal language modelling (GPT-style): next-token loss, perplexity over the split, samples after validation.

GPT-style causal language modelling (pretrained or from scratch) with split-level perplexity.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import Metric
from transformers import AutoModelForCausalLM

from lightning_llm import registry
from lightning_llm.config.schema import NonNegative, Positive, UnitFraction
from lightning_llm.data.chat_templates import chat_generation_config
from lightning_llm.errors import UserError
from lightning_llm.modules.base import HFTaskModule
from lightning_llm.modules.generation import score_replies

IGNORE_INDEX = -100


# The unigram baseline reads at most this many training tokens: enough for stable frequencies, bounded on huge corpora.
_UNIGRAM_MAX_TRAIN_TOKENS = 50_000_000


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


class CausalLMCollator:
    """Stack packed blocks (labels = inputs; the model shifts them) or pad line-by-line examples.

    Our own instead of `DataCollatorForLanguageModeling(mlm=False)`: that one sets every label equal to the pad
    id to -100, which silently drops the EOS document separators from the loss when pad == EOS (GPT-2 style).
    Padding is masked by position (attention mask) instead, and packed blocks skip padding work entirely.
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id, self.pad_to_multiple_of = pad_token_id, pad_to_multiple_of

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        lengths = [len(e["input_ids"]) for e in examples]
        longest = max(lengths)
        if min(lengths) == longest:  # packed blocks: nothing to pad
            input_ids = torch.tensor([e["input_ids"] for e in examples], dtype=torch.long)
            return {"input_ids": input_ids, "labels": input_ids.clone()}
        if self.pad_to_multiple_of:
            longest = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(examples), longest), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(examples), longest), dtype=torch.long)
        for i, e in enumerate(examples):
            input_ids[i, :lengths[i]] = torch.as_tensor(e["input_ids"])
            attention_mask[i, :lengths[i]] = 1
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class NextTokenCorpus:
    """What a packed text corpus (`TextCorpusDataModule`) does for causal LM: documents end with EOS, the
    baseline is the unigram perplexity of the validation split, batches are stacked blocks (`CausalLMCollator`)."""

    def check(self, corpus: Any) -> None:
        """Nothing to check before tokenizing: any tokenizer can feed a causal LM."""

    def separator(self, tokenizer: Any) -> int | None:
        return tokenizer.eos_token_id

    def statistics(self, corpus: Any, processed: Any) -> dict[str, Any]:
        if "train" not in processed or "validation" not in processed:
            return {}
        return {"unigram_ppl": unigram_perplexity(_rows(processed["train"]), _rows(processed["validation"]),
                                                  len(corpus.tokenizer))}

    def model_kwargs(self, meta: Mapping[str, Any]) -> dict[str, Any]:
        return {"baseline_ppl": meta.get("unigram_ppl")}

    def collators(self, corpus: Any) -> tuple[Any, Any]:
        collate = CausalLMCollator(corpus.tokenizer.pad_token_id, corpus.pad_to_multiple_of)
        return collate, collate


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


@torch.no_grad()
def attends_across_packed_rows(model: torch.nn.Module) -> bool:
    """Whether the second of two sequences packed in one row (position ids restarting, no attention mask) sees the
    first: its logits change when only the first changes. Architectures that build the causal mask from the
    position ids (Llama, Qwen, Mistral, Gemma, GPT-2, ...) keep them apart; others (OPT, MPT, BLOOM) do not."""
    vocab = model.get_input_embeddings().num_embeddings
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    first, other, second = (torch.randint(vocab, (1, 4), generator=generator) for _ in range(3))
    positions = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3]], device=device)
    was_training = model.training
    model.eval()
    try:
        a, b = (model(input_ids=torch.cat([head, second], 1).to(device), position_ids=positions,
                      use_cache=False).logits[:, 4:].float() for head in (first, other))
    except Exception:  # e.g. flash attention before the model is on its GPU (which packs by position ids anyway)
        return False
    finally:
        model.train(was_training)
    return not torch.allclose(a, b, rtol=1e-3, atol=1e-3 * float(a.abs().max().clamp(min=1)))


class CausalLMModule(HFTaskModule):
    """Logs `train/loss`; `val/loss`, `val/ppl`, `val/token_acc`, `val/ppl_best`, `val/unigram_ppl`;
    `test/loss`, `test/ppl`, `test/token_acc`. `*/loss` is the token-weighted mean next-token NLL of the split
    and `*/ppl = exp(*/loss)`. `baseline_ppl` (from the data module: a unigram model of the training tokens on
    the validation split) is logged as `val/unigram_ppl`, the number val/ppl must beat."""

    auto_class = AutoModelForCausalLM
    task = "causal_lm"
    tokenizer_kind = "bpe"
    architecture_suffixes = ("ForCausalLM", "LMHeadModel")
    bare_config_default = True  # a config.json naming no architecture: read as a language model by llm-generate
    peft_task_type = "CAUSAL_LM"
    generates, explain_as = True, "continuation"
    optimized_metric = ("val/ppl", "min")
    best_metric = ("val/ppl", "min")
    data_kwargs = frozenset({"baseline_ppl"})
    # Validation prompts + references (data=chat, data=preference) that `eval_generation_samples` replies to, and
    # whether rows hold several conversations (data=chat data.packing=true).
    data_attachments = frozenset({"reply_samples", "packed_conversations"})
    reply_samples: Sequence[Mapping[str, Any]] = ()
    packed_conversations = False
    baseline_metrics = {"baseline_ppl": "val/unigram_ppl"}

    def __init__(self, *, model_type: str = "gpt2", learning_rate: Positive[float] = 6e-4,
                 weight_decay: NonNegative[float] = 0.1, warmup_ratio: UnitFraction = 0.05,
                 adam_betas: Sequence[float] = (0.9, 0.95), lr_scheduler: str = "cosine",
                 baseline_ppl: float | None = None, eval_generation_samples: NonNegative[int] = 0,
                 **kwargs: Any) -> None:
        super().__init__(model_type=model_type, learning_rate=learning_rate, weight_decay=weight_decay,
                         warmup_ratio=warmup_ratio, adam_betas=adam_betas, lr_scheduler=lr_scheduler, **kwargs)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.packed_conversations and attends_across_packed_rows(self.model):
            raise UserError(f"data.packing=true: {type(self.model).__name__} attends across the conversations of a "
                            f"packed row (its attention mask ignores the position ids): set data.packing=false")

    # use_cache=False: training and scoring need no KV cache, and transformers derives the block-diagonal mask of
    # packed rows (`data.packing`, position ids restarting, no attention mask) only without one.
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.model(**batch, use_cache=False).loss
        self.log_train_loss(loss)
        return self.token_weighted(loss, batch)

    def count_targets(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return (batch["labels"][:, 1:] != IGNORE_INDEX).sum()

    def make_metrics(self) -> NextTokenMetrics:
        return NextTokenMetrics()

    def update_metrics(self, metrics: NextTokenMetrics, batch: dict[str, torch.Tensor]) -> None:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        metrics.update(self.model(**inputs, use_cache=False).logits, batch["labels"])

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self.hparams.eval_generation_samples and not self.trainer.sanity_checking:
            if self.reply_samples:
                share, records = score_replies(self.model, self.tokenizer,
                                               self.reply_samples[:int(self.hparams.eval_generation_samples)])
                if records:  # none when no prompt leaves room for a reply in the model's context
                    self.log("val/reply_exact_match", share)
                    self.write_predictions("val", records)

    def export(self, directory: Any, tokenizer: Any) -> None:
        """With a chat template the export's generation_config also stops at the template's end of turn, so plain
        transformers `generate` ends a reply where the model was trained to."""
        if tokenizer is not None and getattr(tokenizer, "chat_template", None):
            chat_generation_config(tokenizer, self.model.generation_config)
        super().export(directory, tokenizer)

    def fit_summary(self, metrics: Mapping[str, Any]) -> str | None:
        ppl, baseline = metrics.get("val/ppl"), self.hparams.baseline_ppl
        if ppl is None or baseline is None:
            return None
        line = (f"val/ppl {float(ppl):.3f} vs unigram baseline {baseline:.3f} "
                f"(add-one smoothed training-token frequencies, whole validation split)")
        exact = metrics.get("val/reply_exact_match")
        if exact is not None:
            line += (f"; validation replies generated exactly right: {float(exact):.1%} "
                     f"(greedy, {self.hparams.eval_generation_samples} at most)")
        return line


registry.register(CausalLMModule, legacy={"lightning_llm.modules.causal_lm.CausalLMModule": CausalLMModule})
