"""Sequence-to-sequence (translation, summarization): an encoder-decoder trained with teacher forcing and scored
on what `generate` produces: sacrebleu corpus BLEU/chrF and rouge-score ROUGE over the whole split."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torchmetrics import MeanMetric, Metric
from torchmetrics.utilities import dim_zero_cat
from transformers import AutoConfig, AutoModelForSeq2SeqLM

from lightning_llm.config.schema import NonNegative, Positive, UnitFraction
from lightning_llm.data.seq2seq import seq2seq_scores
from lightning_llm.errors import UserError
from lightning_llm.modules.base import HFTaskModule
from lightning_llm.runtime.extras import require_extra

# The generic size fields (hidden_size, num_hidden_layers: encoder and decoder each, num_attention_heads,
# intermediate_size) -> each architecture's names, for what HF's attribute_map does not already cover
# (T5: hidden_size/num_hidden_layers/num_attention_heads; BART/Marian: hidden_size, num_hidden_layers and
# num_attention_heads of the encoder only).
_DECODER_START = {"t5": "pad", "mt5": "pad", "umt5": "pad", "bart": "eos", "mbart": "eos", "marian": "pad"}


def _architecture_fields(model_type: str, layers: int | None, heads: int | None, hidden: int | None,
                         ffn: int | None) -> dict[str, Any]:
    if model_type in ("t5", "mt5", "umt5"):
        fields = {"num_decoder_layers": layers, "d_ff": ffn,
                  "d_kv": hidden // heads if hidden and heads else None}
    else:  # BART-style configs: bart, mbart, marian, pegasus, ...
        fields = {"decoder_layers": layers, "decoder_attention_heads": heads, "encoder_ffn_dim": ffn,
                  "decoder_ffn_dim": ffn}
    return {k: v for k, v in fields.items() if v is not None}


def _require_encoder_decoder(name: str, trust_remote_code: bool) -> None:
    """Refuse a decoder-only checkpoint by name before its weights load (transformers' own error only names
    the config class and AutoModelForSeq2SeqLM)."""
    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
    except Exception:  # not loadable at all: the base's loading reports why, in one line
        return
    if not getattr(config, "is_encoder_decoder", False):
        raise UserError(f"model=seq2seq needs an encoder-decoder model, model.pretrained_model_name_or_path={name!r} "
                        f"is a decoder-only {config.model_type!r} (use model=gpt for it)")


def _check_positions(config: Any, max_source_length: int | None, max_target_length: int | None,
                     max_new_tokens: int) -> None:
    """Sources, targets and generated text must fit the learned/sinusoidal positions of BART/Marian-style models
    (T5's relative positions have no limit): past them the embedding lookup fails mid-run. Checked before
    training, as run_summarization does; rows cut at `data.max_source_length` are counted by the data module."""
    limit = getattr(config, "max_position_embeddings", None)
    if not limit:
        return
    # The decoder reads the start token and all generated tokens but the last: max_new_tokens positions.
    for key, value in (("data.max_source_length", max_source_length), ("data.max_target_length", max_target_length),
                       ("model.generation_max_new_tokens", max_new_tokens)):
        if value is not None and value > limit:
            raise UserError(f"{key}={value} does not fit the model's {limit} positions (max_position_embeddings of "
                            f"{config.model_type!r}): lower it or raise model.max_position_embeddings")


class GenerationMetric(Metric):
    """Generated token ids, reference (label) ids and source ids of a whole split, in list states reduced by
    concatenation: under DDP every rank's examples are gathered, then decoded and scored once as one corpus
    (corpus BLEU is not a mean of batch BLEUs). Set `tokenizer` before `compute()`."""

    full_state_update = False

    def __init__(self, pad_token_id: int | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pad_token_id = pad_token_id
        self.tokenizer: Any = None
        for name in ("preds", "pred_lengths", "refs", "ref_lengths", "sources", "source_lengths"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def _add(self, ids: torch.Tensor, keep: torch.Tensor, values: str, lengths: str) -> None:
        getattr(self, values).append(ids[keep].long())
        getattr(self, lengths).append(keep.sum(-1).long())

    def update(self, generated: torch.Tensor, labels: torch.Tensor, input_ids: torch.Tensor,
               attention_mask: torch.Tensor) -> None:
        pad = self.pad_token_id
        self._add(generated, generated != pad if pad is not None else torch.ones_like(generated, dtype=torch.bool),
                  "preds", "pred_lengths")
        self._add(labels, labels != -100, "refs", "ref_lengths")
        self._add(input_ids, attention_mask.bool(), "sources", "source_lengths")

    def _sequences(self, values: str, lengths: str) -> list[list[int]]:
        flat, sizes = dim_zero_cat(getattr(self, values)).tolist(), dim_zero_cat(getattr(self, lengths)).tolist()
        out, start = [], 0
        for n in sizes:
            out.append(flat[start:start + n])
            start += n
        return out

    def texts(self) -> dict[str, list[str]]:
        """Decoded `source`, `reference` and `prediction` strings, one per example (special tokens dropped)."""
        if isinstance(self.preds, list) and not self.preds:  # after a DDP sync the states are tensors
            return {"source": [], "reference": [], "prediction": []}
        if self.tokenizer is None:
            raise RuntimeError("GenerationMetric.tokenizer must be set before compute()")
        decode = self.tokenizer.batch_decode
        return {name: [text.strip() for text in decode(self._sequences(values, lengths), skip_special_tokens=True)]
                for name, values, lengths in (("source", "sources", "source_lengths"),
                                              ("reference", "refs", "ref_lengths"),
                                              ("prediction", "preds", "pred_lengths"))}

    def compute(self) -> dict[str, Any]:
        """The scores, sacrebleu's `signature` and the decoded `texts`, over all ranks' examples: torchmetrics
        syncs the states for `compute()` only (and restores each rank's own afterwards), so the texts are decoded
        here and not from the states later."""
        texts = self.texts()
        if not texts["prediction"]:
            return {}
        values = seq2seq_scores(texts["prediction"], texts["reference"])
        values["gen_len"] = float(dim_zero_cat(self.pred_lengths).float().mean())
        values["texts"] = texts
        return values


class Seq2SeqModule(HFTaskModule):
    """Logs `train/loss` and, for `val`/`test`: `loss` (teacher-forced, mean over target tokens), `bleu`, `chrf`
    (sacrebleu corpus scores, default settings), `rouge1`, `rouge2`, `rougeL`, `rougeLsum` (rouge-score F-measure
    with stemming, mean over examples, x100) and `gen_len` (mean generated tokens), from `model.generate` with
    `generation_num_beams`, `generation_max_new_tokens`, `length_penalty`, `no_repeat_ngram_size` (also saved as
    the export's generation_config). `eval_generation_samples` limits generation in validation to the first N
    examples of each epoch (per process; null = all); test always generates for every example.

    Each stage writes `predictions_<stage>.jsonl` (source, reference, prediction; all ranks' examples) into the run
    directory and puts sacrebleu's signatures and the float64 scores in results.json `details.<stage>`.
    """

    auto_class = AutoModelForSeq2SeqLM
    task = "seq2seq"
    tokenizer_kind = "sentencepiece"
    monitor = ("val/loss", "min")
    optimized_metric = ("val/bleu", "max")
    best_metric = ("val/bleu", "max")
    data_kwargs = frozenset({"baselines", "max_source_length", "max_target_length"})

    def __init__(self, *, model_type: str = "t5", generation_num_beams: Positive[int] = 1,
                 generation_max_new_tokens: Positive[int] = 64, length_penalty: float = 1.0,
                 no_repeat_ngram_size: NonNegative[int] = 0, eval_generation_samples: Positive[int] | None = None,
                 baselines: dict[str, float] | None = None, max_source_length: int | None = None,
                 max_target_length: int | None = None, tokenizer_vocab_size: Positive[int] = 4000,
                 learning_rate: Positive[float] = 1e-3, warmup_ratio: UnitFraction = 0.05, **kwargs: Any) -> None:
        scratch = not kwargs.get("pretrained_model_name_or_path") and kwargs.get("hf_config") is None
        if kwargs.get("pretrained_model_name_or_path") and kwargs.get("hf_config") is None:
            _require_encoder_decoder(kwargs["pretrained_model_name_or_path"], kwargs.get("trust_remote_code", False))
        special = kwargs.get("special_token_ids") or {}
        self._scratch_fields: dict[str, Any] = {}
        if scratch:
            self._scratch_fields = _architecture_fields(
                model_type, kwargs.get("num_hidden_layers"), kwargs.get("num_attention_heads"),
                kwargs.get("hidden_size"), kwargs.get("intermediate_size"))
            start = _DECODER_START.get(model_type, "pad")
            token = special.get(f"{start}_token_id")
            if token is not None:
                self._scratch_fields["decoder_start_token_id"] = token
            if "eos_token_id" in special:
                self._scratch_fields["forced_eos_token_id"] = special["eos_token_id"]
                if model_type in ("bart", "mbart") and "bos_token_id" not in special:
                    self._scratch_fields["bos_token_id"] = special["eos_token_id"]
            if model_type in ("t5", "mt5", "umt5") and kwargs.get("dropout") is not None:
                self._scratch_fields["dropout_rate"] = kwargs["dropout"]
        super().__init__(model_type=model_type, tokenizer_vocab_size=tokenizer_vocab_size,
                         learning_rate=learning_rate, warmup_ratio=warmup_ratio, **kwargs)
        require_extra("sacrebleu", "seq2seq", "model=seq2seq")  # fail before training, not at validation
        require_extra("rouge_score", "seq2seq", "model=seq2seq")
        if not getattr(self.model.config, "is_encoder_decoder", False):
            raise UserError(f"model=seq2seq needs an encoder-decoder model, {self.model.config.model_type!r} is not "
                            f"one (use model=gpt for decoder-only models)")
        config, gen = self.model.config, self.model.generation_config
        _check_positions(config, max_source_length, max_target_length, generation_max_new_tokens)
        gen.num_beams, gen.max_new_tokens = generation_num_beams, generation_max_new_tokens
        gen.length_penalty, gen.no_repeat_ngram_size = length_penalty, no_repeat_ngram_size
        for key in ("decoder_start_token_id", "eos_token_id", "pad_token_id"):
            if getattr(gen, key, None) is None and getattr(config, key, None) is not None:
                setattr(gen, key, getattr(config, key))
        if gen.decoder_start_token_id is None:
            raise UserError("model: no decoder_start_token_id in the model config: set "
                            "+model.config_overrides.decoder_start_token_id=<id>")
        self._generated = 0

    def task_config(self) -> dict[str, Any]:
        return dict(self._scratch_fields)

    def make_metrics(self) -> nn.ModuleDict:
        return nn.ModuleDict({"loss": MeanMetric(), "generation": GenerationMetric(self.model.config.pad_token_id)})

    # ----------------------------------------------------------------- evaluation
    def on_validation_epoch_start(self) -> None:
        self._generated = 0

    def _wants_generation(self, size: int) -> bool:
        """Always in test; in validation not during the sanity check and only up to `eval_generation_samples`."""
        if self.trainer.testing:
            return True
        limit = self.hparams.eval_generation_samples
        if self.trainer.sanity_checking or (limit is not None and self._generated >= limit):
            return False
        self._generated += size
        return True

    def update_metrics(self, metrics: nn.ModuleDict, batch: dict[str, torch.Tensor]) -> None:
        out = self.model(**batch)
        labels = batch["labels"]
        metrics["loss"].update(out.loss.detach(), weight=int((labels != -100).sum()))
        if self._wants_generation(labels.shape[0]):
            generated = self.model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                            generation_config=self.model.generation_config)
            metrics["generation"].update(generated, labels, batch["input_ids"], batch["attention_mask"])

    def compute_metrics(self, metrics: nn.ModuleDict) -> dict[str, Any]:
        generation = metrics["generation"]
        generation.tokenizer = self._tokenizer()
        scores = dict(generation.compute())
        signature, texts = scores.pop("signature", None), scores.pop("texts", None)
        if signature is not None:
            stage = "test" if self.trainer.testing else "val"
            # Lightning logs float32: the float64 scores go to results.json `details.<stage>`, next to sacrebleu's
            # signature, so that they can be checked against a rescoring of predictions_<stage>.jsonl.
            details = {"examples": len(texts["prediction"]), "sacrebleu_signature": signature,
                       "metrics": {f"{stage}/{k}": float(v) for k, v in scores.items()}}
            records = ({"source": s, "reference": r, "prediction": p}
                       for s, r, p in zip(texts["source"], texts["reference"], texts["prediction"]))
            self.write_predictions(stage, records, details)
        return {"loss": float(metrics["loss"].compute()), **{k: float(v) for k, v in scores.items()}}

    def _tokenizer(self) -> Any:
        tokenizer = getattr(getattr(self.trainer, "datamodule", None), "tokenizer", None)
        if tokenizer is None:
            raise UserError("seq2seq metrics decode with the data module's tokenizer: pass datamodule= to the trainer")
        return tokenizer

    def fit_summary(self, metrics: Mapping[str, Any]) -> str | None:
        base = self.hparams.get("baselines") or {}
        parts = []
        for name in ("bleu", "chrf", "rougeL"):
            value = metrics.get(f"val/{name}")
            if value is None:
                continue
            ref = [f"{label} {base[f'{key}_{name}']:.1f}" for key, label in (("copy", "copy-source"),
                                                                               ("lead", "lead-1"))
                   if f"{key}_{name}" in base]
            parts.append(f"val/{name} {float(value):.1f}" + (f" (vs {', '.join(ref)})" if ref else ""))
        return "; ".join(parts) if parts else None
