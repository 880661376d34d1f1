"""Batched generation (decoder-only and encoder-decoder models): what `llm-generate` and the generation-samples
callback share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import GenerationConfig, PreTrainedModel


def _trim(ids: list[int], eos_ids: set[int]) -> list[int]:
    """Cut after the first EOS: in a batch, finished rows go on with padding that a lone prompt never has."""
    for i, token in enumerate(ids):
        if token in eos_ids:
            return ids[:i + 1]
    return ids


@torch.inference_mode()
def generate_ids(model: PreTrainedModel, prompts: Sequence[Sequence[int]], config: GenerationConfig,
                 batch_size: int = 8, streamer: Any = None) -> list[list[list[int]]]:
    """New token ids per prompt (`config.num_return_sequences` lists each), generated in padded batches.

    Prompts are batched by length (least padding) and returned in the given order. A decoder-only model gets LEFT
    padding, so that every row's last prompt token sits at the end, where generation continues from (transformers
    derives the position ids from the attention mask). An encoder-decoder gets RIGHT padding (the encoder masks
    it; the decoder starts from `decoder_start_token_id`, which is dropped from the result).
    """
    pad = config.pad_token_id if config.pad_token_id is not None else 0
    eos = config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
    encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[list[list[int]]] = [[] for _ in prompts]
    device = model.device
    for start in range(0, len(order), batch_size):
        rows = [list(prompts[i]) for i in order[start:start + batch_size]]
        width = max(map(len, rows))
        if encoder_decoder:
            input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
            attention_mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
        else:
            input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
            attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        out = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
                             streamer=streamer)
        new = out[:, 1 if encoder_decoder else width:].tolist()
        n = config.num_return_sequences or 1
        for j, index in enumerate(order[start:start + batch_size]):
            results[index] = [_trim(ids, eos_ids) for ids in new[j * n:(j + 1) * n]]
    return results
