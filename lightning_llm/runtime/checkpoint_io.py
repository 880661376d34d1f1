"""Checkpoint files written straight to disk (Lightning's default buffers each one in memory first)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO


class DirectCheckpointIO(TorchCheckpointIO):
    """Lightning's `TorchCheckpointIO`, but a local checkpoint is `torch.save`d into a temporary file beside its
    target and renamed over it (atomic on POSIX: a reader sees the old file or the new one, never half of one).

    Lightning's `_atomic_save` serialises the whole checkpoint into a `BytesIO`, then copies it out through fsspec:
    a second in-memory copy of a file that can be gigabytes, and twice the time (docs/benchmarks.md). Remote URLs and
    `storage_options` keep Lightning's path. The file is written as `torch.save` writes it (CRC-32s included)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options=storage_options)
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
        try:
            torch.save(checkpoint, partial)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)


def write_checkpoints_directly(trainer: Any) -> None:
    """Use `DirectCheckpointIO` where the strategy has Lightning's default (not a user's plugin, nor the sharded
    writers of FSDP/DeepSpeed, which do not go through it)."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = DirectCheckpointIO()
