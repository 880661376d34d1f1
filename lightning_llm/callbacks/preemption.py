"""Preemption: on SIGTERM, finish the current batch, save last.ckpt, and let the entry point exit."""

from __future__ import annotations

import os
import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.rank_zero import rank_zero_info, rank_zero_warn

from lightning_llm.callbacks.nan_guard import TrainingDivergedError


class PreemptionCheckpoint(pl.Callback):
    """Writes `<dirpath>/<filename>.ckpt` when Lightning stops training because the process got SIGTERM.

    Lightning's signal connector turns SIGTERM into `SIGTERMException` once the current batch is done (on every
    rank); the checkpoint is therefore taken at a batch boundary, with the data loader and RNG states of exactly
    that point, and `ckpt_path=last` continues from the next batch. Other exceptions save nothing (a NaN or a
    crash must not overwrite the last good checkpoint). On SLURM with auto-requeue, Lightning additionally saves
    its own `hpc_ckpt_*.ckpt` on SIGUSR1 and requeues the job; that checkpoint takes precedence on restart.
    """

    def __init__(self, dirpath: str, filename: str = "last") -> None:
        self.dirpath, self.filename = dirpath, filename

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.dirpath, f"{self.filename}.ckpt")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.sanity_checking or trainer.global_step == 0:
            return
        try:
            trainer.save_checkpoint(self.ckpt_path)
        except TrainingDivergedError as err:  # the pending NaN check failed: the weights are not worth keeping
            rank_zero_warn(f"preempted, but no checkpoint saved: {err}")
            return
        rank_zero_info(f"preempted (SIGTERM) at step {trainer.global_step}: saved {self.ckpt_path}")
