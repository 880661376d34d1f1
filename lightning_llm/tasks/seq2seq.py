"""Sequence-to-sequence (translation, summarization): an encoder-decoder trained with teacher forcing on source and
target text (hub datasets or local JSON/JSONL/CSV/parquet files, flat columns or the nested
`translation: {en: .., de: ..}` form), scored on what `generate` produces with the model's generation settings:
sacrebleu corpus BLEU/chrF and rouge-score ROUGE-1/2/L/Lsum over the whole split. `llm-predict` generates the same
way for a file of sources.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import pyarrow.compute as pc
import torch
from datasets import DatasetDict
from pytorch_lightning.utilities.rank_zero import rank_zero_only
from torch import nn
from torchmetrics import MeanMetric, Metric
from torchmetrics.utilities import dim_zero_cat
from transformers import AutoConfig, AutoModelForSeq2SeqLM

from lightning_llm import registry
from lightning_llm.config.schema import NonNegative, Positive, UnitFraction
from lightning_llm.data.base import CachedTextDataModule, arrow_column
from lightning_llm.data.padding import PaddingCollator
from lightning_llm.data.sources import require_nonempty
from lightning_llm.errors import UserError, require
from lightning_llm.modules.base import HFTaskModule
from lightning_llm.modules.generation import generate_ids
from lightning_llm.runtime.extras import require_extra
from lightning_llm.runtime.inputs import file_column, model_max_length, read_rows, text_lines

_DEMOS = {name: {split: f"{name}_{split}.jsonl" for split in ("train", "validation", "test")}
          for name in ("translation", "summarization")}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`, split after `.`, `!` or `?` followed by white space: what rougeLsum scores per line
    (HF's run_summarization uses nltk's sent_tokenize, which we do not depend on)."""
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def seq2seq_scores(predictions: list[str], references: list[str]) -> dict[str, Any]:
    """Corpus BLEU and chrF (sacrebleu, default settings: 13a tokenisation, one reference per example) and the
    mean ROUGE-1/2/L/Lsum F-measure (rouge-score, Porter stemming; rougeLsum on newline-joined sentences), all
    x100, plus sacrebleu's signatures. One function for the model's metric and the data's baselines."""
    sacrebleu = require_extra("sacrebleu", "seq2seq", "model=seq2seq")
    rouge_scorer = require_extra("rouge_score.rouge_scorer", "seq2seq", "model=seq2seq")
    if not predictions:
        return {}
    # sacrebleu warns when references end in " ." (looks tokenized) and rouge-score logs its tokenizer choice at
    # INFO, per call: neither changes a score.
    logging.getLogger("sacrebleu").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.WARNING)
    bleu, chrf = sacrebleu.metrics.BLEU(), sacrebleu.metrics.CHRF()
    values: dict[str, Any] = {"bleu": bleu.corpus_score(predictions, [references]).score,
                              "chrf": chrf.corpus_score(predictions, [references]).score}
    types = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
    scorer = rouge_scorer.RougeScorer(types, use_stemmer=True)
    totals = dict.fromkeys(types, 0.0)
    for pred, ref in zip(predictions, references):
        scores = scorer.score("\n".join(split_sentences(ref)), "\n".join(split_sentences(pred)))
        for name in types:
            totals[name] += scores[name].fmeasure
    values.update({name: 100 * total / len(predictions) for name, total in totals.items()})
    values["signature"] = {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature())}
    return values


class Seq2SeqCollator:
    """`DataCollatorForSeq2Seq`'s tensors (without a model: the model shifts `labels` into its decoder inputs):
    `input_ids`/`attention_mask` padded to the longest source, `labels` to the longest target with -100, both
    rounded up to `pad_to_multiple_of`; numpy padding (`PaddingCollator`) instead of `tokenizer.pad`."""

    def __init__(self, tokenizer: Any, pad_to_multiple_of: int | None = None) -> None:
        self.pad = PaddingCollator(tokenizer, pad_to_multiple_of=pad_to_multiple_of)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.pad([{k: v for k, v in e.items() if k != "labels"} for e in examples])
        if "labels" in examples[0]:
            batch["labels"] = self.pad([{"labels": e["labels"]} for e in examples])["labels"]
        return batch


class Seq2SeqDataModule(CachedTextDataModule):
    """Source/target text pairs tokenized once with a shared tokenizer (`text_target=` for the labels).

    Columns: `source_column`/`target_column` (flat), or, with `source_lang` and `target_lang` set, the nested
    `translation_column` (`{"en": ..., "de": ...}` per row, the hub's WMT/opus form). `source_prefix` is put before
    every source (T5's "translate English to German: "). Sources longer than `max_source_length` and targets longer
    than `max_target_length` tokens are cut (counted and reported once). With no source given: the bundled
    synthetic `demo` set (`translation` or `summarization`, see scripts/data/make_seq2seq_data.py).

    `model_kwargs()` gives the module `baselines`: BLEU/chrF/ROUGE on the validation split of copying the source
    (`copy_*`) and of its first sentence (`lead_*`), scored exactly as the model's predictions are, and the two
    length limits (checked against the model's positions).
    """

    # Split order kept: validation generates for its first `eval_generation_samples` examples, and
    # predictions_<stage>.jsonl lists the examples in the data's order.
    eval_length_column = None

    objectives = frozenset({"seq2seq"})

    def __init__(self, *, source_column: str = "source", target_column: str = "target",
                 translation_column: str = "translation", source_lang: str | None = None,
                 target_lang: str | None = None, source_prefix: str = "", max_source_length: Positive[int] = 256,
                 max_target_length: Positive[int] = 128,
                 demo: Literal["translation", "summarization"] = "translation", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if (source_lang is None) != (target_lang is None):
            raise UserError(f"data.source_lang={source_lang!r}, data.target_lang={target_lang!r}: give both (the "
                            f"nested {translation_column!r} form) or neither (data.source_column/target_column)")
        self.source_column, self.target_column, self.translation_column = source_column, target_column, \
            translation_column
        self.source_lang, self.target_lang, self.source_prefix = source_lang, target_lang, source_prefix
        self.max_source_length, self.max_target_length = max_source_length, max_target_length
        self.demo = demo
        self._bundled = _DEMOS[demo]
        self.baselines: dict[str, float] | None = None
        self.collate_fn = None  # set once a tokenizer is known (see setup)

    def model_kwargs(self) -> dict[str, Any]:
        return {"baselines": self.baselines, "max_source_length": self.max_source_length,
                "max_target_length": self.max_target_length}

    def _processing_params(self) -> dict[str, Any]:
        return {"source": self.source_column, "target": self.target_column, "translation": self.translation_column,
                "langs": [self.source_lang, self.target_lang], "prefix": self.source_prefix,
                "max_source_length": self.max_source_length, "max_target_length": self.max_target_length}

    # ----------------------------------------------------------------- raw text
    @property
    def _nested(self) -> bool:
        return self.source_lang is not None

    def _check_columns(self, raw: DatasetDict) -> None:
        keys = ("translation_column",) if self._nested else ("source_column", "target_column")
        for split, ds in raw.items():
            require_nonempty(ds, split, f"data ({split})")
            for key in keys:
                column = getattr(self, key)
                if column not in ds.column_names:
                    raise UserError(f"data.{key}={column!r} is not a column of the {split} split "
                                    f"(columns: {', '.join(ds.column_names)})")
            if self._nested:
                first = ds[0][self.translation_column]
                for key in ("source_lang", "target_lang"):
                    lang = getattr(self, key)
                    if not isinstance(first, dict) or lang not in first:
                        have = ", ".join(first) if isinstance(first, dict) else type(first).__name__
                        raise UserError(f"data.{key}={lang!r} is not a language of the {self.translation_column!r} "
                                        f"column in the {split} split (it has: {have})")

    def _pairs(self, batch: dict[str, list], split: str, indices: list[int]) -> tuple[list[str], list[str]]:
        if self._nested:
            rows = batch[self.translation_column]
            sources = [row.get(self.source_lang) if row else None for row in rows]
            targets = [row.get(self.target_lang) if row else None for row in rows]
            names = (f"{self.translation_column}.{self.source_lang}", f"{self.translation_column}.{self.target_lang}")
        else:
            sources, targets = batch[self.source_column], batch[self.target_column]
            names = (self.source_column, self.target_column)
        for i, (source, target) in enumerate(zip(sources, targets)):
            for text, name in ((source, names[0]), (target, names[1])):
                if not isinstance(text, str) or not text.strip():
                    raise UserError(f"data ({split}) row {indices[i]}: empty or missing {name!r} (every row needs a "
                                    f"source and a target text)")
        return sources, targets

    def _texts(self, raw: DatasetDict, split: str) -> tuple[list[str], list[str]]:
        ds = raw[split]
        columns = [self.translation_column] if self._nested else [self.source_column, self.target_column]
        return self._pairs(ds.select_columns(columns).to_dict(), split, list(range(len(ds))))

    def training_texts(self) -> Iterator[str]:
        """Source and target texts of the training split: one shared vocabulary for encoder and decoder."""
        raw = self.load_raw()
        self._check_columns(raw)
        sources, targets = self._texts(raw, "train")
        yield from sources
        yield from targets

    # ----------------------------------------------------------------- tokenize once
    def prepare_data(self) -> None:
        tok = self.tokenizer
        if tok is not None and (tok.eos_token_id is None or tok.pad_token_id is None):
            raise UserError(f"seq2seq needs a tokenizer with pad and EOS tokens, {type(tok).__name__} has "
                            f"pad={tok.pad_token!r}, eos={tok.eos_token!r}: set model.tokenizer_name_or_path")
        super().prepare_data()

    def _process(self, raw: DatasetDict) -> tuple[DatasetDict, dict[str, Any]]:
        self._check_columns(raw)
        tok, prefix = self.tokenizer, self.source_prefix
        max_source, max_target = self.max_source_length, self.max_target_length

        def encode(batch: dict[str, list], indices: list[int], split: str) -> dict[str, list]:
            sources, targets = self._pairs(batch, split, indices)
            out = tok([prefix + s for s in sources], truncation=True, max_length=max_source)
            full = tok(text_target=targets)["input_ids"]
            out["labels"] = [ids[:max_target - 1] + ids[-1:] if len(ids) > max_target else ids for ids in full]
            full_sources = tok([prefix + s for s in sources])["input_ids"]
            out["cut_source"] = [len(ids) > max_source for ids in full_sources]
            out["cut_target"] = [len(ids) > max_target for ids in full]
            return out

        processed, cut = DatasetDict(), {}
        for split, ds in raw.items():
            ds = ds.map(encode, batched=True, with_indices=True, remove_columns=ds.column_names,
                        num_proc=self.preprocessing_num_workers, desc=f"tokenizing {split}",
                        load_from_cache_file=False, fn_kwargs={"split": split})
            cut[split] = {"source": int(pc.sum(arrow_column(ds, "cut_source")).as_py() or 0),
                          "target": int(pc.sum(arrow_column(ds, "cut_target")).as_py() or 0),
                          "rows": len(ds)}
            processed[split] = ds.remove_columns(["cut_source", "cut_target"])
        return processed, {"cut": cut, "baselines": self._baselines(raw)}

    def _baselines(self, raw: DatasetDict) -> dict[str, float] | None:
        """Copy-the-source and first-sentence (lead-1) scores on the validation split: the floor of the task."""
        if "validation" not in raw:
            return None
        sources, targets = self._texts(raw, "validation")
        out = {}
        for name, guesses in (("copy", sources), ("lead", [(split_sentences(s) or [s])[0] for s in sources])):
            scores = seq2seq_scores(guesses, targets)
            out.update({f"{name}_{metric}": float(scores[metric])
                        for metric in ("bleu", "chrf", "rouge1", "rouge2", "rougeL", "rougeLsum")})
        return out

    def _after_load(self, datasets: DatasetDict, meta: dict[str, Any]) -> None:
        self.baselines = meta["baselines"]
        self._warn_truncated(meta["cut"])
        self.collate_fn = Seq2SeqCollator(self.tokenizer, pad_to_multiple_of=self.pad_to_multiple_of)

    @rank_zero_only
    def _warn_truncated(self, cut: dict[str, dict[str, int]]) -> None:
        parts = [f"{counts[side]} of {counts['rows']} {split} {side}s"
                 for split, counts in cut.items() for side in ("source", "target") if counts[side]]
        if parts:
            print(f"warning: data.max_source_length={self.max_source_length}/data.max_target_length="
                  f"{self.max_target_length} cut {', '.join(parts)} (the tokens past it are not seen or trained on)",
                  file=sys.stderr)


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
    # Told by `config.is_encoder_decoder`: MarianMTModel's architecture name has no head suffix, and multimodal
    # *ForConditionalGeneration models are no encoder-decoders.
    encoder_decoder = True
    peft_task_type = "SEQ_2_SEQ_LM"
    generates = True
    monitor = ("val/loss", "min")
    optimized_metric = ("val/bleu", "max")
    best_metric = ("val/bleu", "max")
    data_kwargs = frozenset({"baselines", "max_source_length", "max_target_length"})

    prediction_settings = ("max_source_length", "source_prefix")

    @staticmethod
    def predict(model: Any, tokenizer: Any, cfg: Any, settings: Mapping[str, Any], device: str) -> Any:
        """The generated target of each source text (`source_column` of a CSV/TSV/JSON(L) file, else one text
        per line), encoded as evaluation encoded it (the run's `source_prefix`, cut at its `max_source_length`)
        and generated with the model's own generation settings: JSONL `{"source", "prediction"}`."""
        path = Path(cfg.input_file)
        if path.suffix.lower() in (".jsonl", ".json", ".csv", ".tsv"):
            sources = [str(s) for s in file_column(read_rows(path), "source_column", cfg.source_column, path)]
        else:
            sources = text_lines(path)
        require(bool(sources), f"input_file: no source texts in {cfg.input_file}")
        prefix = settings.get("source_prefix") or ""
        max_length = model_max_length(model, tokenizer, cfg.max_length or settings.get("max_source_length"))
        encoded = tokenizer([prefix + s for s in sources], truncation=True, max_length=max_length)["input_ids"]
        new_ids = generate_ids(model, encoded, model.generation_config, cfg.batch_size)
        return [{"source": source, "prediction": tokenizer.decode(ids[0], skip_special_tokens=True).strip()}
                for source, ids in zip(sources, new_ids)]

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
        if self.tokenizer is None:
            raise UserError("the generation metrics decode with the tokenizer the data was encoded with: set "
                            "module.tokenizer (runtime/builders.py does)")
        return self.tokenizer

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


registry.register(Seq2SeqModule, legacy={
    "lightning_llm.modules.seq2seq.Seq2SeqModule": Seq2SeqModule,
    "lightning_llm.data.seq2seq.Seq2SeqDataModule": Seq2SeqDataModule})
