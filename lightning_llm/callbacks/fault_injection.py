"""Rehearse failures on purpose: preemption and divergence at a chosen step (tests, cluster dry runs)."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytorch_lightning as pl
import torch


class FaultInjection(pl.Callback):
    """`sigterm_at_step=k`: the process sends itself SIGTERM after optimizer step k, as a scheduler preempting the
    job would; it fires only while `trainer.global_step` passes that step, so relaunching the same command with
    `ckpt_path=last` resumes past it. `nan_at_step=k` (k >= 2): the update of step k-1 diverges, as a too high
    learning rate makes it do: it leaves every weight at the largest finite value, so the loss of step k overflows
    to NaN, and a checkpoint written at step k-1 holds those weights (resume without it). Example:
    `llm-train +callbacks.fault._target_=lightning_llm.callbacks.FaultInjection +callbacks.fault.sigterm_at_step=50`
    """

    def __init__(self, sigterm_at_step: int | None = None, nan_at_step: int | None = None) -> None:
        self.sigterm_at_step, self.nan_at_step = sigterm_at_step, nan_at_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        # Runs before the checkpoint callbacks' own on_train_batch_end (Lightning orders those last).
        if self.nan_at_step is not None and trainer.global_step == self.nan_at_step - 1:
            with torch.no_grad():
                for param in pl_module.parameters():
                    param.fill_(torch.finfo(param.dtype).max)
        if self.sigterm_at_step is not None and trainer.global_step == self.sigterm_at_step:
            os.kill(os.getpid(), signal.SIGTERM)
