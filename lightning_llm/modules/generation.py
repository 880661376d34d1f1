"""Batched generation (decoder-only and encoder-decoder models): what `llm-generate` and the generation-samples
callback share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import GenerationConfig, PreTrainedModel

from lightning_llm.data import chat_templates


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


def score_replies(model: PreTrainedModel, tokenizer: Any, samples: Sequence[dict[str, Any]],
                  max_new_tokens: int = 64) -> tuple[float, list[dict[str, Any]]]:
    """Greedy replies to chat prompts (`{"messages": [...], "reference": str}`, see `ChatDataModule`), stopping at
    the template's end of turn: (share equal to the reference after stripping whitespace, one record each).
    Prompts too long for the model's context with the reply are left out (counted in neither)."""
    prompts = [chat_templates.prompt_ids(tokenizer, s["messages"]) for s in samples]
    # As many new tokens as the longest reference needs (and a few more), and only prompts that leave room for
    # them in the model's context (a longer one would index past the position embeddings).
    longest = max((len(tokenizer(s["reference"], add_special_tokens=False)["input_ids"]) for s in samples), default=0)
    max_new_tokens = min(max_new_tokens, longest + 4)
    limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    kept = [(s, p) for s, p in zip(samples, prompts) if not limit or len(p) + max_new_tokens <= limit]
    if not kept:
        return float("nan"), []
    samples, prompts = [s for s, _ in kept], [p for _, p in kept]
    config = chat_templates.chat_generation_config(tokenizer, GenerationConfig(max_new_tokens=max_new_tokens,
                                                                               do_sample=False))
    records = []
    for sample, ids in zip(samples, generate_ids(model, prompts, config, batch_size=32)):
        reply = tokenizer.decode(ids[0], skip_special_tokens=True).strip()
        records.append({"messages": sample["messages"], "reference": sample["reference"], "prediction": reply,
                        "exact_match": reply == sample["reference"].strip()})
    return sum(r["exact_match"] for r in records) / len(records), records
