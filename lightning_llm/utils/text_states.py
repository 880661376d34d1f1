"""Per-example JSON objects (words, texts, ids) carried in torchmetrics list states.

torchmetrics gathers only tensors across DDP ranks, so each object travels as its UTF-8 JSON bytes plus a length:
what a task needs to write a predictions file (all ranks' examples) arrives with the logits it was scored from.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics.utilities import dim_zero_cat


def encode_objects(objects: Sequence[Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(bytes, lengths): the objects' JSON, concatenated as uint8, and each one's byte length."""
    encoded = [json.dumps(o, ensure_ascii=False).encode() for o in objects]
    blob = torch.frombuffer(bytearray(b"".join(encoded)), dtype=torch.uint8) if any(encoded) else \
        torch.zeros(0, dtype=torch.uint8)
    return blob.to(device), torch.tensor([len(e) for e in encoded], dtype=torch.long, device=device)


def decode_objects(blobs: list[torch.Tensor] | torch.Tensor, lengths: list[torch.Tensor] | torch.Tensor) -> list[Any]:
    """The objects of `encode_objects` states (lists of tensors, or the tensors a DDP sync concatenated)."""
    blob = bytes(dim_zero_cat(blobs).cpu().numpy().tobytes())
    out, pos = [], 0
    for n in dim_zero_cat(lengths).tolist():
        out.append(json.loads(blob[pos:pos + n].decode()))
        pos += n
    return out
