"""Stop at the first non-finite training loss, before a checkpoint of the broken weights can be written."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch

from lightning_llm.errors import TrainingDivergedError


class NanGuard(pl.Callback):
    """Raises `TrainingDivergedError` naming the step at which `train/loss` stopped being finite.

    Checkpoint callbacks run after this one (Lightning orders them last) and `on_save_checkpoint` checks again,
    so `last.ckpt` keeps the last good weights. Reading the flag back from the GPU is a device sync: with
    `check_every_n_steps > 1` the flags are collected on device and read in one go (still before any save).
    Under DDP the ranks agree on the verdict, so no rank is left waiting in a collective.
    """

    def __init__(self, check_every_n_steps: int = 1) -> None:
        self.check_every_n_steps = max(1, int(check_every_n_steps))
        self._pending: list[tuple[int, int, torch.Tensor]] = []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor):
            self._pending.append((trainer.global_step, trainer.current_epoch, ~torch.isfinite(loss.detach()).all()))
        if len(self._pending) >= self.check_every_n_steps:
            self.check(trainer)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        self.check(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.check(trainer)

    def check(self, trainer: pl.Trainer) -> None:
        """Raise if any loss seen since the last check was not finite (on every rank if on any)."""
        if not self._pending:
            return
        flags = torch.stack([bad for _, _, bad in self._pending]).float()
        flags = trainer.strategy.reduce(flags, reduce_op="sum") if trainer.world_size > 1 else flags
        seen, self._pending = self._pending, []
        for (step, epoch, _), bad in zip(seen, flags.tolist()):
            if bad:
                raise TrainingDivergedError(
                    f"train/loss is not finite (NaN/inf) at step {step} (epoch {epoch}): training stopped, "
                    f"checkpoints written before it are kept. Lower model.learning_rate, keep "
                    f"trainer.gradient_clip_val, or use hardware.precision=bf16-mixed instead of 16-mixed")
