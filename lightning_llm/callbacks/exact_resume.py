"""Exact resume: the data position and the RNG streams of a checkpoint, put back before the first resumed batch."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from lightning_llm import compat


def capture_rng_states() -> dict[str, Any]:
    """torch (CPU and, once initialized, CUDA), numpy and `random` states as tensors and plain Python values,
    so the checkpoint still loads with `torch.load(weights_only=True)` (numpy arrays would not)."""
    kind, keys, pos, has_gauss, cached_gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gauss)},
            "python": random.getstate()}


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    npy = states["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


class ExactResume(pl.Callback):
    """A resumed run continues exactly where the interrupted one stopped: same next batch, same random numbers.

    - RNG: Lightning saves no RNG state, so a resumed run would draw different dropout masks (and different MLM
      masks when collation runs in the main process). The states are saved with every checkpoint and restored
      in `on_train_start`: `load_state_dict` would be too early (loaders are built in between) and
      `on_train_batch_start` too late (the first resumed batch is collated before it).
    - Data order: Lightning stores the `StatefulDataLoader` position in the checkpoint but drops it on resume
      when `configure_optimizers` reads `trainer.estimated_stepping_batches` (Lightning issue #20550, open in
      2.6.6): the loader is built before the checkpoint is restored. The pending position is loaded here and
      the iterator recreated, as the proposed fix (Lightning PR #21765) does; a no-op once Lightning loads it.
    """

    def __init__(self) -> None:
        self._rng_to_restore: list[dict[str, Any]] | None = None

    def state_dict(self) -> dict[str, Any]:
        """One entry per rank: batches padded to different lengths draw different amounts of dropout noise, so
        the ranks' streams drift apart. Every rank takes part in saving a checkpoint, so gathering is safe."""
        states = capture_rng_states()
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            per_rank: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(per_rank, states)
            return {"per_rank": per_rank}
        return {"per_rank": [states]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._rng_to_restore = state_dict.get("per_rank")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        compat.restore_pending_loader_state(trainer)
        if self._rng_to_restore:
            rank = trainer.global_rank
            # Resumed on another number of ranks: rank 0's streams for the extra ones (no longer exact anyway).
            restore_rng_states(self._rng_to_restore[rank if rank < len(self._rng_to_restore) else 0])
            self._rng_to_restore = None
