"""Gradient accumulation counts tokens: k micro-batches of B/k rows give the gradient of one batch of B rows
(the summed token loss over all k divided by their total target count, transformers' `num_items_in_batch`),
whatever the padding and the number of target tokens of each micro-batch."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from lightning_llm.tasks.causal_lm import CausalLMModule
from lightning_llm.tasks.masked_lm import MaskedLMModule

SIZE = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
        "max_position_embeddings": 64, "vocab_size": 64, "dropout": 0.0}


def _batch(rows: list[tuple[int, int]], masked: bool, seed: int) -> dict[str, torch.Tensor]:
    """Rows of (length, first trained position), right-padded to the longest; labels -100 elsewhere."""
    g = torch.Generator().manual_seed(seed)
    width = max(n for n, _ in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, (n, start) in enumerate(rows):
        ids[i, :n] = torch.randint(5, 64, (n,), generator=g)
        mask[i, :n] = 1
        if masked:  # every third position from `start` is a masked-LM target
            labels[i, start:n:3] = ids[i, start:n:3]
            ids[i, start:n:3] = 4
        else:
            labels[i, start:n] = ids[i, start:n]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _cat(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    width = max(a["input_ids"].shape[1], b["input_ids"].shape[1])
    pad = {"input_ids": 0, "attention_mask": 0, "labels": -100}
    return {k: torch.cat([torch.nn.functional.pad(x[k], (0, width - x[k].shape[1]), value=pad[k]) for x in (a, b)])
            for k in a}


def _gradients(module_cls: type, batches: list[dict[str, torch.Tensor]], model_type: str) -> list[torch.Tensor]:
    class Recording(module_cls):
        def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
            super().on_before_optimizer_step(optimizer)
            self.grads = [p.grad.detach().clone() for p in self.parameters() if p.grad is not None]

    torch.manual_seed(0)
    module = Recording(model_type=model_type, **SIZE)
    trainer = pl.Trainer(max_steps=1, accumulate_grad_batches=len(batches), gradient_clip_val=None, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0, accelerator="cpu", devices=1)
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    return module.grads


@pytest.mark.parametrize("module_cls, model_type", [(CausalLMModule, "llama"), (MaskedLMModule, "bert")])
def test_accumulated_micro_batches_give_the_full_batch_gradient(module_cls: type, model_type: str) -> None:
    masked = module_cls is MaskedLMModule
    first = _batch([(30, 2), (28, 20)], masked, seed=1)  # many target tokens
    second = _batch([(12, 9), (9, 6)], masked, seed=2)  # few, and less padding
    whole = _gradients(module_cls, [_cat(first, second)], model_type)
    accumulated = _gradients(module_cls, [first, second], model_type)
    assert len(whole) == len(accumulated) > 0
    worst = max((a - w).abs().max().item() for a, w in zip(accumulated, whole))
    assert worst < 1e-5, worst
