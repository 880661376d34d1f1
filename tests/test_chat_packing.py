"""data.packing=true: whole conversations share rows with position ids restarting and no attention mask; each
conversation must score exactly as it does alone (transformers derives a block-diagonal mask from position_ids)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from lightning_llm.tasks.causal_lm import NextTokenMetrics
from lightning_llm.tasks.chat import IGNORE_INDEX, ChatDataModule
from tests.conftest import prepared_datamodule, write_jsonl
from tests.test_chat import CONVERSATIONS, tiny_tokenizer

MORE = CONVERSATIONS + [CONVERSATIONS[0][:3], CONVERSATIONS[2][:2], CONVERSATIONS[0][1:], CONVERSATIONS[1]]


def _datamodule(tmp_path: Path, packing: bool, max_length: int = 96, assistant_only_loss: bool = True
                ) -> ChatDataModule:
    tok = tiny_tokenizer(tmp_path, "chatml")
    path = write_jsonl(tmp_path / "rows.jsonl", [{"messages": c} for c in MORE])
    return prepared_datamodule(ChatDataModule, tmp_path, {"train": path, "validation": path, "test": None},
                               tokenizer=tok, max_length=max_length, packing=packing, batch_size=4,
                               assistant_only_loss=assistant_only_loss, eval_batch_size=4)


def _model(vocab: int, attn: str) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=128)
    config._attn_implementation = attn
    return LlamaForCausalLM(config).eval()


def _segments(position_ids: torch.Tensor) -> list[tuple[int, int]]:
    starts = (position_ids == 0).nonzero().flatten().tolist() + [len(position_ids)]
    return list(zip(starts[:-1], starts[1:]))


def _nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits[:-1].float(), labels[1:], ignore_index=IGNORE_INDEX, reduction="sum")


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_each_packed_conversation_scores_as_alone(tmp_path: Path, attn: str) -> None:
    packed, alone = _datamodule(tmp_path, True), _datamodule(tmp_path, False)
    singles = {tuple(r["input_ids"]): r["labels"] for r in alone.datasets["train"]}
    model = _model(len(packed.tokenizer), attn)
    batch = packed.collate_fn([packed.datasets["train"][i] for i in range(len(packed.datasets["train"]))])
    assert "attention_mask" not in batch and len(batch["input_ids"]) < len(MORE)  # several per row
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
    checked = 0
    for row in range(len(batch["input_ids"])):
        for start, end in _segments(batch["position_ids"][row]):
            ids = tuple(batch["input_ids"][row, start:end].tolist())
            if ids not in singles:  # the padding block at the end of a row
                assert (batch["labels"][row, start:end] == IGNORE_INDEX).all()
                continue
            with torch.no_grad():
                own = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0]
            labels = torch.tensor(singles[ids])
            assert abs(_nll(logits[row, start:end], labels) - _nll(own, labels)) < 1e-5
            assert (logits[row, start:end] - own).abs().max() < 1e-4
            checked += 1
    assert checked == len(MORE)


def test_no_gradient_crosses_conversations(tmp_path: Path) -> None:
    packed = _datamodule(tmp_path, True)
    model = _model(len(packed.tokenizer), "sdpa")
    rows = packed.datasets["train"]
    busiest = max(range(len(rows)), key=lambda i: rows[i]["position_ids"].count(0))
    batch = packed.collate_fn([rows[busiest]])
    segments = _segments(batch["position_ids"][0])
    assert len(segments) >= 2
    embeds = model.get_input_embeddings()(batch["input_ids"]).detach().requires_grad_(True)
    logits = model(inputs_embeds=embeds, position_ids=batch["position_ids"], use_cache=False).logits
    (a_start, a_end), (b_start, b_end) = segments[0], segments[1]
    _nll(logits[0, b_start:b_end], batch["labels"][0, b_start:b_end]).backward()
    assert embeds.grad[0, b_start:b_end].abs().sum() > 0  # the gradient does reach its own tokens
    assert embeds.grad[0, a_start:a_end].abs().max() == 0


@pytest.mark.parametrize("assistant_only_loss", [True, False])
def test_packed_validation_metrics_equal_unpacked(tmp_path: Path, assistant_only_loss: bool) -> None:
    """Whole conversations too: there a conversation's first token must not be predicted from the one before."""
    scores = []
    for packing in (True, False):
        dm = _datamodule(tmp_path, packing, assistant_only_loss=assistant_only_loss)
        model = _model(len(dm.tokenizer), "sdpa")
        metric = NextTokenMetrics()
        with torch.no_grad():
            for batch in dm.val_dataloader():
                labels = batch.pop("labels")
                metric.update(model(**batch, use_cache=False).logits, labels)
        scores.append({k: float(v) for k, v in metric.compute().items()})
        scores[-1]["tokens"] = int(metric.tokens)
    packed, padded = scores
    assert packed["tokens"] == padded["tokens"] > 0
    assert abs(packed["loss"] - padded["loss"]) < 1e-6 and packed["token_acc"] == padded["token_acc"]
