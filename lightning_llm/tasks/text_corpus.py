"""A text corpus for the language-modelling tasks (causal_lm, masked_lm): packed into block_size-token blocks
(group_texts) or line by line, from txt/json/jsonl/parquet files or the hub. What differs between the two
objectives (document separator, baseline, collators) is said by each task's corpus recipe (`NextTokenCorpus`
in tasks/causal_lm.py, `MaskedTokenCorpus` in tasks/masked_lm.py), not branched on here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from itertools import chain
from typing import Annotated, Any, Protocol

import numpy as np
import pyarrow.compute as pc
from datasets import DatasetDict

from lightning_llm import registry
from lightning_llm.config.schema import OpenUnitFraction, Range
from lightning_llm.data.base import CachedTextDataModule
from lightning_llm.data.masking import check_mlm_probability
from lightning_llm.errors import UserError
from lightning_llm.tasks.causal_lm import NextTokenCorpus
from lightning_llm.tasks.masked_lm import MaskedTokenCorpus


class CorpusRecipe(Protocol):
    """What one objective adds to packing a corpus."""

    def check(self, corpus: Any) -> None: ...  # before tokenizing (tokenizer fits the objective)
    def separator(self, tokenizer: Any) -> int | None: ...  # token appended to each document, if any
    def statistics(self, corpus: Any, processed: DatasetDict) -> dict[str, Any]: ...  # baseline, kept in meta
    def model_kwargs(self, meta: Mapping[str, Any]) -> dict[str, Any]: ...  # the baseline handed to the model
    def collators(self, corpus: Any) -> tuple[Any, Any]: ...  # (training, evaluation)


RECIPES: dict[str, CorpusRecipe] = {"causal_lm": NextTokenCorpus(), "masked_lm": MaskedTokenCorpus()}

class TextCorpusDataModule(CachedTextDataModule):
    """A hub dataset or local txt/json/jsonl/parquet files, tokenized once and packed into `block_size` chunks.

    Documents are separated by EOS (causal LM) or by the tokenizer's own [CLS]/[SEP] (masked LM), as in the
    `group_texts` recipe of the transformers examples; the remainder of each 1000-document batch is dropped.
    With `line_by_line`, each non-empty line (row) is one example, truncated to `block_size` and padded per batch.
    Masked LM: masks are drawn anew for every training batch and fixed per batch for validation/test
    (see `MaskingCollator`); `majority_token_id` (most frequent non-special training token) is the baseline
    guess that masked-LM accuracy is compared with.
    """

    objectives = frozenset(RECIPES)
    _bundled = {"train": "corpus_train.txt", "validation": "corpus_validation.txt", "test": "corpus_test.txt"}

    def __init__(self, *, text_column: str = "text", block_size: Annotated[int, Range(2)] = 128,
                 line_by_line: bool = False, mlm_probability: OpenUnitFraction = 0.15, whole_word_mask: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_mlm_probability(mlm_probability)
        self.recipe = RECIPES[self.objective]
        self.text_column, self.block_size = text_column, block_size
        self.line_by_line, self.mlm_probability, self.whole_word_mask = line_by_line, mlm_probability, whole_word_mask
        self.collate_fn = self.eval_collate_fn = None  # built in setup, once the tokenizer is known
        self.meta: dict[str, Any] = {}

    def model_kwargs(self) -> dict[str, Any]:
        """The baseline the model's metric is reported against (see the objective's recipe)."""
        return self.recipe.model_kwargs(self.meta)

    @property
    def majority_token_id(self) -> int | None:
        """Masked LM's baseline guess (None for causal LM)."""
        return self.meta.get("majority_token_id")

    def _processing_params(self) -> dict[str, Any]:
        return {"objective": self.objective, "text": self.text_column, "block_size": self.block_size,
                "line_by_line": self.line_by_line}

    def _check_columns(self, raw: DatasetDict) -> None:
        for split, ds in raw.items():
            if self.text_column not in ds.column_names:
                raise UserError(f"data.text_column={self.text_column!r} is not a column of the {split} split "
                                f"(columns: {', '.join(ds.column_names)})")

    def training_texts(self) -> Iterator[str]:
        raw = self.load_raw()
        self._check_columns(raw)
        for batch in raw["train"].select_columns([self.text_column]).iter(batch_size=1000):
            yield from (t for t in batch[self.text_column] if t and t.strip())

    def prepare_data(self) -> None:
        self.recipe.check(self)
        super().prepare_data()

    def _process(self, raw: DatasetDict) -> tuple[DatasetDict, dict[str, Any]]:
        self._check_columns(raw)
        tok, column, block = self.tokenizer, self.text_column, self.block_size
        eos = self.recipe.separator(tok)

        # Only input_ids are kept, and blocks are packed with C-level iteration (chain + fromiter with count,
        # handed over as one array): the tokenizing pass is most of prepare_data on a large corpus.
        only_ids = {"return_attention_mask": False, "return_token_type_ids": False}

        def encode(batch: dict[str, list]) -> dict[str, Any]:
            texts = [t for t in batch[column] if t and t.strip()]
            if self.line_by_line:
                return {"input_ids": tok(texts, truncation=True, max_length=block, **only_ids)["input_ids"]}
            ids = tok(texts, **only_ids)["input_ids"]
            if eos is not None:
                ids = [x if x and x[-1] == eos else x + [eos] for x in ids]
            flat = np.fromiter(chain.from_iterable(ids), dtype=np.int64, count=sum(map(len, ids)))
            usable = len(flat) // block * block
            return {"input_ids": flat[:usable].reshape(-1, block)}

        processed = DatasetDict()
        for split, ds in raw.items():
            processed[split] = ds.map(encode, batched=True, batch_size=1000, remove_columns=ds.column_names,
                                      num_proc=self.preprocessing_num_workers, load_from_cache_file=False,
                                      desc=f"tokenizing {split}")
            if len(processed[split]) == 0:
                what = "no non-empty lines" if self.line_by_line else f"fewer than data.block_size={block} tokens"
                raise UserError(f"data: the {split} split has {what} (empty corpus?)")
        # Summed from Arrow's list lengths, not by reading the column into Python lists.
        meta = {"num_tokens": {s: int(pc.sum(pc.list_value_length(d.data.column("input_ids"))).as_py() or 0)
                               for s, d in processed.items()}}
        meta |= self.recipe.statistics(self, processed)
        return processed, meta

    def _after_load(self, datasets: DatasetDict, meta: dict[str, Any]) -> None:
        self.meta, self.num_tokens = meta, meta["num_tokens"]
        self.collate_fn, self.eval_collate_fn = self.recipe.collators(self)


registry.register_legacy({
    "lightning_llm.data.language_modeling.TextCorpusDataModule": TextCorpusDataModule})
