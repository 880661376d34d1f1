"""Stop at the first non-finite training loss and leave `last.ckpt` holding weights whose loss was finite."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins import CheckpointIO

from lightning_llm.errors import TrainingDivergedError

BACKUP_PREFIX = "previous-"  # not "last*": `ckpt_path=last` never picks a backup


class NanGuard(pl.Callback):
    """Raises `TrainingDivergedError` naming the step at which `train/loss` stopped being finite, and which
    checkpoint step `last.ckpt` then holds.

    The loss of step k is computed with the weights of step k-1, so a checkpoint written after step k-1 is only
    known to be good once step k's loss is finite ("proven"). When a divergence starts, the checkpoint written just
    before it holds exactly the weights that produce the NaN, and resuming from it would diverge again. So a
    checkpoint file is never overwritten while it is the only proven copy: the proven file is first moved to
    `previous-<name>` (a rename, no copy) and deleted once the new file is proven in turn. At a NaN, every
    unproven file is moved to `diverged-step<N>.ckpt` (kept, not deleted) and its proven copy put back.
    This covers checkpoints written through the strategy's `CheckpointIO` (single device, DDP, FSDP with a full
    state dict); DeepSpeed and sharded FSDP write directories without it and keep Lightning's behaviour.

    Reading the flag back from the GPU is a device sync: with `check_every_n_steps > 1` the flags are collected on
    device and read in one go, always before a checkpoint is written. Under DDP the ranks agree on the verdict, so
    no rank is left waiting in a collective; only rank 0 touches files.
    """

    def __init__(self, check_every_n_steps: int = 1) -> None:
        self.check_every_n_steps = max(1, int(check_every_n_steps))
        self._pending: list[tuple[int, int, torch.Tensor]] = []
        self._finite_through = 0  # the largest step whose loss (and all before it) was seen finite
        self._unproven: dict[Path, int] = {}  # checkpoint file -> step of the weights it holds, not yet proven

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and not isinstance(trainer.strategy.checkpoint_io, KeepProvenCheckpointIO):
            trainer.strategy.checkpoint_io = KeepProvenCheckpointIO(trainer.strategy.checkpoint_io, self)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finite_through = trainer.global_step
        if trainer.is_global_zero and trainer.ckpt_path and Path(trainer.ckpt_path).is_file():
            self._unproven[Path(trainer.ckpt_path).resolve()] = trainer.global_step  # resumed: proven by step 1

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

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for path in self._unproven:  # training finished: the older copies are no longer needed
            _backup_of(path).unlink(missing_ok=True)
        self._unproven.clear()

    def check(self, trainer: pl.Trainer) -> None:
        """Raise if any loss seen since the last check was not finite (on every rank if on any)."""
        if not self._pending:
            return
        flags = torch.stack([bad for _, _, bad in self._pending]).float()
        flags = trainer.strategy.reduce(flags, reduce_op="sum") if trainer.world_size > 1 else flags
        seen, self._pending = self._pending, []
        for (step, epoch, _), bad in zip(seen, flags.tolist()):
            if bad:
                kept = self._set_aside_unproven()
                raise TrainingDivergedError(
                    f"train/loss is not finite (NaN/inf) at step {step} (epoch {epoch}): training stopped; {kept}. "
                    f"Resume with ckpt_path=last and a lower model.learning_rate, keep trainer.gradient_clip_val, "
                    f"or use hardware.precision=bf16-mixed instead of 16-mixed")
            self._finite_through = max(self._finite_through, step)
        for path, step in list(self._unproven.items()):
            if self.is_proven(step):
                del self._unproven[path]
                _backup_of(path).unlink(missing_ok=True)

    def is_proven(self, step: int) -> bool:
        """The weights after `step` optimizer steps gave a finite loss on the next batch."""
        return step < self._finite_through

    def before_overwrite(self, path: Path) -> None:
        """`path` is about to be rewritten: keep its content if it is the proven copy."""
        if path.is_file() and self.is_proven(self._unproven.get(path, -1)):
            os.replace(path, _backup_of(path))

    def written(self, path: Path, step: int) -> None:
        self._unproven[path] = step

    def _set_aside_unproven(self) -> str:
        """Move each unproven checkpoint to diverged-step<N>.ckpt and put its proven copy back; say what is kept."""
        notes = []
        for path, step in sorted(self._unproven.items()):
            if not path.is_file():
                continue
            aside = path.with_name(f"diverged-step{step}{path.suffix}")
            os.replace(path, aside)
            backup = _backup_of(path)
            if backup.is_file():
                os.replace(backup, path)
                kept_step = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("global_step")
                notes.append(f"{path.parent.name}/{path.name} holds step {kept_step}, the last weights with a finite "
                             f"loss (those of step {step}, which produced it, are in {aside.name})")
            else:
                notes.append(f"no checkpoint with a finite loss was written; the weights of step {step} are in "
                             f"{path.parent.name}/{aside.name}")
        self._unproven.clear()
        return "; ".join(notes) or "checkpoints written before it are kept"


def _backup_of(path: Path) -> Path:
    return path.with_name(BACKUP_PREFIX + path.name)


class KeepProvenCheckpointIO(CheckpointIO):
    """The strategy's CheckpointIO, with `NanGuard` told before a local checkpoint file is overwritten and after
    it is written (Lightning calls it on rank 0 only)."""

    def __init__(self, inner: CheckpointIO, guard: NanGuard) -> None:
        self.inner, self.guard = inner, guard

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        local = "://" not in str(path)
        if local:
            self.guard.before_overwrite(Path(path).resolve())
        self.inner.save_checkpoint(checkpoint, path, storage_options=storage_options)
        if local:
            self.guard.written(Path(path).resolve(), int(checkpoint.get("global_step", 0)))

    def load_checkpoint(self, path: Any, map_location: Any | None = None, weights_only: bool | None = None) -> Any:
        return self.inner.load_checkpoint(path, map_location=map_location, weights_only=weights_only)

    def remove_checkpoint(self, path: Any) -> None:
        self.inner.remove_checkpoint(path)

    def teardown(self) -> None:
        self.inner.teardown()
