"""Dynamic padding of tokenized examples: `DataCollatorWithPadding`'s output, built with numpy."""

from __future__ import annotations

from itertools import chain
from typing import Any

import numpy as np
import torch


def auto_pad_multiple() -> int | None:
    """What `data.pad_to_multiple_of: auto` means: 8 where a CUDA device is present (tensor-core-friendly shapes
    for mixed precision), none on CPU, where every pad token is computed for nothing (docs/benchmarks.md; none is
    also the Trainer's DataCollatorWithPadding default)."""
    return 8 if torch.cuda.is_available() else None


class PaddingCollator:
    """Pads every list-valued field to the batch's longest row (rounded up to `pad_to_multiple_of`) on the
    tokenizer's padding side: `input_ids` with the pad id, `token_type_ids` with the pad type id, per-token
    `labels` with -100, the rest (`attention_mask`, ...) with 0. Scalar fields (sequence `labels`) and the
    `stacked` fields (fixed-length vectors such as multi-hot labels) are stacked as they are, dtype kept.

    Our own instead of `transformers.DataCollatorWithPadding`: that one pads through `tokenizer.pad`, Python lists
    per field and row, several times slower per batch (docs/benchmarks.md, "Collators":
    `python -m scripts.bench.collators`). The tensors are the same (tests/test_padding.py; the benchmark checks too).
    """

    def __init__(self, tokenizer: Any, pad_to_multiple_of: int | None = None, stacked: tuple[str, ...] = ()) -> None:
        self.pad_values = {"input_ids": tokenizer.pad_token_id,
                           "token_type_ids": getattr(tokenizer, "pad_token_type_id", 0), "labels": -100}
        self.left = getattr(tokenizer, "padding_side", "right") == "left"
        self.pad_to_multiple_of = pad_to_multiple_of
        self.stacked = frozenset(stacked)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        first = examples[0]
        sequence_keys = [k for k, v in first.items() if isinstance(v, (list, tuple, np.ndarray, torch.Tensor))
                         and np.ndim(v) == 1 and k not in self.stacked]
        batch = {k: torch.tensor([e[k] for e in examples]) for k in first if k not in sequence_keys}
        if not sequence_keys:
            return batch
        lengths = np.fromiter((len(e[sequence_keys[0]]) for e in examples), dtype=np.int64, count=len(examples))
        width = int(lengths.max())
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        positions = np.arange(width)
        # Row-major boolean scatter: each row's tokens land, in order, left- or right-aligned.
        filled = positions >= (width - lengths)[:, None] if self.left else positions < lengths[:, None]
        total = int(lengths.sum())
        for key in sequence_keys:
            out = np.full((len(examples), width), self.pad_values.get(key, 0), dtype=np.int64)
            out[filled] = np.fromiter(chain.from_iterable(e[key] for e in examples), dtype=np.int64, count=total)
            batch[key] = torch.from_numpy(out)
        return batch
