"""Preemption: on SIGTERM, finish the current batch, save last.ckpt, and let the entry point exit."""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.rank_zero import rank_zero_info, rank_zero_warn

from lightning_llm.errors import TrainingDivergedError
from lightning_llm.runtime.results import PREEMPTED_EXIT_CODE


class PreemptionCheckpoint(pl.Callback):
    """Writes `<dirpath>/<filename>.ckpt` when training stops because the process got SIGTERM.

    One process: Lightning's signal connector turns SIGTERM into `SIGTERMException` once the current batch is
    done, so the checkpoint is taken at a batch boundary with the data loader and RNG states of exactly that
    point, and `ckpt_path=last` continues from the next batch. Other exceptions save nothing (a NaN or a crash
    must not overwrite the last good checkpoint).

    Several ranks: Lightning 2.6.6 broadcasts from inside its SIGTERM handler, which deadlocks when the ranks
    are signalled at different points of a step (as schedulers do; Lightning issue #20806). Here the handler
    only notes the signal and the ranks agree on it after each batch (one tiny all-reduce), then all stop at
    the same batch. On SLURM with auto-requeue Lightning also saves `hpc_ckpt_*.ckpt` on SIGUSR1 and requeues
    the job; `ckpt_path=last` takes the newer of the two.
    """

    def __init__(self, dirpath: str, filename: str = "last") -> None:
        self.dirpath, self.filename = dirpath, filename
        self._signalled = False
        self._saved_at_step: int | None = None

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.dirpath, f"{self.filename}.ckpt")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Replaces the handler Lightning set for this fit; Lightning restores the previous one when fit ends.
        if trainer.world_size > 1 and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._note_sigterm)

    def _note_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self._signalled = True

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.world_size > 1:
            flag = torch.tensor(float(self._signalled), device=pl_module.device)
            if trainer.strategy.reduce(flag, reduce_op="sum").item() > 0:
                # Saved here: spawned workers (ddp_spawn) get no `on_exception`. The exit code tells the main
                # process that a worker was preempted rather than returning normally.
                self._save(trainer)
                raise SIGTERMException(PREEMPTED_EXIT_CODE)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and not trainer.sanity_checking:
            self._save(trainer)

    def _save(self, trainer: pl.Trainer) -> None:
        if trainer.global_step == 0 or self._saved_at_step == trainer.global_step:
            return
        try:
            trainer.save_checkpoint(self.ckpt_path)
        except TrainingDivergedError as err:  # the pending NaN check failed: the weights are not worth keeping
            rank_zero_warn(f"preempted, but no checkpoint saved: {err}")
            return
        self._saved_at_step = trainer.global_step
        rank_zero_info(f"preempted (SIGTERM) at step {trainer.global_step}: saved {self.ckpt_path}")
