"""Sequence-to-sequence data (translation, summarization): source and target text from hub datasets or local
JSON/JSONL/CSV/parquet files, flat columns or the nested `translation: {en: .., de: ..}` form."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from typing import Any, Literal

import pyarrow.compute as pc
from datasets import DatasetDict
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from lightning_llm.config.schema import Positive
from lightning_llm.data.base import CachedTextDataModule, arrow_column
from lightning_llm.data.padding import PaddingCollator
from lightning_llm.data.sources import require_nonempty
from lightning_llm.errors import UserError
from lightning_llm.runtime.extras import require_extra

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
    synthetic `demo` set (`translation` or `summarization`, see scripts/make_seq2seq_data.py).

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
