"""Masked-LM collation: the transformers collator, checked up front, with exact special-token detection,
WordPiece ('##') whole-word masking and deterministic masks for evaluation."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tokenizers import models
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerBase

from lightning_llm.errors import UserError


def check_mlm_probability(mlm_probability: float) -> None:
    if not 0 < mlm_probability < 1:
        raise UserError(f"data.mlm_probability must be in (0, 1), got {mlm_probability}")


def continuation_prefix(tokenizer: PreTrainedTokenizerBase) -> str | None:
    """The WordPiece continuation prefix ('##') of a fast tokenizer, or None for any other kind of tokenizer."""
    model = getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None)
    if not isinstance(model, models.WordPiece):
        return None
    return model.continuing_subword_prefix or None


def check_mlm_tokenizer(tokenizer: PreTrainedTokenizerBase, whole_word_mask: bool) -> None:
    """Fail before tokenizing anything when the tokenizer cannot serve masked-LM training as configured."""
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    if tokenizer.mask_token is None or tokenizer.mask_token_id is None:
        raise UserError(f"model.tokenizer_name_or_path: the tokenizer {name!r} has no mask token, which masked-LM "
                        f"training needs (use a BERT-style tokenizer, or a from-scratch model: it trains one)")
    if whole_word_mask and continuation_prefix(tokenizer) is None:
        kind = type(getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None)).__name__
        raise UserError(f"data.whole_word_mask=true needs a WordPiece tokenizer ('##' continuation pieces); "
                        f"{name!r} is {kind if kind != 'NoneType' else 'not a fast tokenizer'}: "
                        f"set data.whole_word_mask=false")


def _continuation_table(tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """Per token id: does the token continue the previous word ('##ing')?"""
    prefix, vocab = continuation_prefix(tokenizer), tokenizer.get_vocab()
    table = torch.zeros(max(len(tokenizer), max(vocab.values()) + 1), dtype=torch.bool)
    table[[i for token, i in vocab.items() if token.startswith(prefix)]] = True
    return table


@dataclass
class MaskingCollator(DataCollatorForLanguageModeling):
    """`DataCollatorForLanguageModeling` (15%, 80/10/10, pads per batch) with three changes.

    - Special tokens and padding are found by id (`all_special_ids`) with one `torch.isin` per batch, so the
      [CLS]/[SEP] that packed blocks carry inside them are never masked and no special-tokens mask is stored per
      example. (The library's fallback, `get_special_tokens_mask(already_has_special_tokens=True)`, checks the
      same ids, but row by row in Python.)
    - Whole words follow WordPiece's '##' pieces (as in BERT's own whole-word masking): the library groups tokens
      by character offsets, which would also glue punctuation to the word before it and needs offsets stored.
    - `deterministic=True` (validation/test) seeds the masks of each batch from its content and `seed`, so every
      epoch scores the same masked positions. Training masks come from the global RNG, fresh in every batch and
      epoch (dynamic masking) and reproducible under `seed_everything(workers=True)`.
    """

    deterministic: bool = False

    def __post_init__(self) -> None:
        check_mlm_probability(float(self.mlm_probability))
        check_mlm_tokenizer(self.tokenizer, self.whole_word_mask)
        if self.whole_word_mask:  # the library supports [MASK]-only replacement for whole words (and warns)
            self.mask_replace_prob, self.random_replace_prob = 1.0, 0.0
        self._base_seed, self.seed = self.seed, None  # the library's own per-process seeding stays off
        super().__post_init__()
        self._special_ids = torch.tensor(sorted(set(self.tokenizer.all_special_ids)), dtype=torch.long)
        self._continuation = _continuation_table(self.tokenizer) if self.whole_word_mask else None

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        if self.deterministic:
            self.generator = torch.Generator().manual_seed(self._batch_seed(examples))
        return super().torch_call(examples)

    def _batch_seed(self, examples: list[dict[str, Any]]) -> int:
        digest = hashlib.blake2b(str(self._base_seed or 0).encode(), digest_size=8)
        for example in examples:
            digest.update(np.asarray(example["input_ids"], dtype=np.int64).tobytes())
            digest.update(b"|")
        return int.from_bytes(digest.digest(), "little") & 0x7FFF_FFFF_FFFF_FFFF

    def torch_mask_tokens(self, inputs: torch.Tensor, special_tokens_mask: Any = None,
                          offset_mapping: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        if special_tokens_mask is None:
            special_tokens_mask = torch.isin(inputs, self._special_ids)
        if self.whole_word_mask and offset_mapping is None:
            offset_mapping = self._word_offsets(inputs)
        return super().torch_mask_tokens(inputs, special_tokens_mask=special_tokens_mask,
                                         offset_mapping=offset_mapping)

    def _word_offsets(self, inputs: torch.Tensor) -> torch.Tensor:
        """Offsets that tell the library's word grouping where words continue: token i spans [2i, 2i+1), and a
        '##' piece starts where the previous token ended (2i-1), so only it joins the word before it."""
        positions = torch.arange(inputs.shape[1]).expand_as(inputs) * 2
        return torch.stack([positions - self._continuation[inputs].long(), positions + 1], dim=-1)
