"""Preemption: on SIGTERM, finish the current batch, save last.ckpt, and let the entry point exit."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.rank_zero import rank_zero_info, rank_zero_warn

from lightning_llm.errors import TrainingDivergedError
from lightning_llm.runtime.results import PREEMPTED_EXIT_CODE


def submitit_requeue_signal() -> signal.Signals | None:
    """The signal submitit's SLURM jobs get before their time limit (SUBMITIT_PREEMPT_SIGNAL, default USR2), or
    None outside a submitit SLURM job."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return None
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)


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

    Under `hydra/launcher=slurm` (submitit) SLURM sends submitit's signal (SIGUSR2, `signal_delay_s` before the time
    limit, or `scancel --signal=USR2`), whose handler requeues the job and exits at once, mid-step, with nothing
    saved. During training that signal is only noted too: after the batch the ranks agree, `last.ckpt` is saved,
    and then submitit's handler runs (rank 0 requeues the job, counting time-outs against `max_num_timeout`;
    past that it fails the job). The requeued job reruns the same overrides in the same run directory, and
    `ckpt_path=last` resumes from that batch.
    """

    def __init__(self, dirpath: str, filename: str = "last") -> None:
        self.dirpath, self.filename = dirpath, filename
        self._signalled = False
        self._requeue_noted = False
        self._requeue: tuple[signal.Signals, Callable[..., Any]] | None = None  # submitit's signal and handler
        self._saved_at_step: int | None = None

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.dirpath, f"{self.filename}.ckpt")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        # Replaces the handler Lightning set for this fit; Lightning restores the previous one when fit ends.
        if trainer.world_size > 1:
            signal.signal(signal.SIGTERM, self._note_sigterm)
        requeue_signal = submitit_requeue_signal()
        if requeue_signal is not None and callable(handler := signal.getsignal(requeue_signal)):
            self._requeue = (requeue_signal, handler)
            signal.signal(requeue_signal, self._note_requeue)

    def _note_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self._signalled = True

    def _note_requeue(self, signum: int, frame: FrameType | None) -> None:
        self._requeue_noted = True

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.world_size == 1 and not self._requeue:
            return  # Lightning's own SIGTERM handling (see the class docstring)
        sigterm, requeue = self._signalled, self._requeue_noted
        if trainer.world_size > 1:
            flags = torch.tensor([float(sigterm), float(requeue)], device=pl_module.device)
            sigterm, requeue = (bool(v > 0) for v in trainer.strategy.reduce(flags, reduce_op="sum").tolist())
        if requeue:
            self._save(trainer)
            self._requeue_noted = False
            signum, handler = self._requeue
            try:
                handler(signum, None)  # rank 0: requeues and exits (or fails the job: too many time-outs)
            except SystemExit:
                pass
            raise SIGTERMException(PREEMPTED_EXIT_CODE)
        if sigterm:
            # Saved here: spawned workers (ddp_spawn) get no `on_exception`. The exit code tells the main
            # process that a worker was preempted rather than returning normally.
            self._save(trainer)
            raise SIGTERMException(PREEMPTED_EXIT_CODE)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_requeue_handler()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore_requeue_handler()

    def _restore_requeue_handler(self) -> None:
        """Give submitit its handler back after training; a signal noted but not acted on (it came during the last
        validation) is delivered to it, since the time limit is as near as it was."""
        if self._requeue is None or threading.current_thread() is not threading.main_thread():
            return
        signum, handler = self._requeue
        self._requeue = None
        signal.signal(signum, handler)
        if self._requeue_noted:
            self._requeue_noted = False
            os.kill(os.getpid(), signum)

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
