"""PaddingCollator produces exactly what transformers' DataCollatorWithPadding produces."""

from __future__ import annotations

import random

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import DataCollatorWithPadding, PreTrainedTokenizerFast

from lightning_llm.data.padding import PaddingCollator


def tokenizer(padding_side: str) -> PreTrainedTokenizerFast:
    vocab = {"[PAD]": 0, "[UNK]": 1, **{f"w{i}": i + 2 for i in range(30)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]",
                                  model_input_names=["input_ids", "token_type_ids", "attention_mask"])
    tok.padding_side = padding_side
    return tok


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("multiple", [None, 8])
def test_same_tensors_as_data_collator_with_padding(padding_side: str, multiple: int | None) -> None:
    tok = tokenizer(padding_side)
    rng = random.Random(0)
    texts = [" ".join(f"w{rng.randrange(30)}" for _ in range(rng.randint(1, 19))) for _ in range(9)]
    encoded = tok(texts, return_token_type_ids=True)
    examples = [{"input_ids": encoded["input_ids"][i], "token_type_ids": [i % 2] * len(encoded["input_ids"][i]),
                 "attention_mask": encoded["attention_mask"][i], "labels": i % 3} for i in range(len(texts))]
    expected = DataCollatorWithPadding(tok, pad_to_multiple_of=multiple)(examples)
    got = PaddingCollator(tok, pad_to_multiple_of=multiple)(examples)
    assert set(got) == set(expected)
    for key in expected:
        assert got[key].dtype == expected[key].dtype and torch.equal(got[key], expected[key]), key


def test_auto_pads_to_eight_on_cuda_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """`data.pad_to_multiple_of: auto`: no rounding on CPU (each pad token is computed), 8 where CUDA is present."""
    from lightning_llm.tasks.classification import TextClassificationDataModule

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert TextClassificationDataModule().pad_to_multiple_of is None
    assert TextClassificationDataModule(pad_to_multiple_of=16).pad_to_multiple_of == 16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert TextClassificationDataModule().pad_to_multiple_of == 8
    assert TextClassificationDataModule(pad_to_multiple_of=None).pad_to_multiple_of is None
