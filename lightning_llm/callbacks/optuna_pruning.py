"""Report the study's objective (`optimized_metric`) to the job's Optuna trial after every validation and stop when
the pruner says so. The objective, not `monitor.metric`: a pruner compares trials' intermediate values of what the
study optimizes, and a task may pick its checkpoints by another metric (DPO, seq2seq: by val/loss).

Added by the builders whenever the job runs an Optuna trial (`TrialLink` in the environment). Global rank 0
talks to the study; the decision is broadcast so every rank stops after the same validation."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl

from lightning_llm.tracking.trials import PRUNED_AT, TrialLink


class OptunaPruning(pl.Callback):
    def __init__(self, link: TrialLink, metric: str) -> None:
        self.link, self.monitor = link, metric
        self._trial: Any = None  # opened on rank 0 in the process that trains (ddp_spawn: not the launcher)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        prune = False
        if trainer.is_global_zero:
            value = trainer.callback_metrics.get(self.monitor)
            if value is not None and math.isfinite(float(value)):
                self._trial = self._trial or self.link.open()
                self._trial.report(float(value), step=trainer.global_step)
                prune = self._trial.should_prune()
                if prune:
                    self._trial.set_user_attr(PRUNED_AT, trainer.global_step)
                    print(f"optuna: trial {self.link.number} pruned at step {trainer.global_step} "
                          f"({self.monitor}={float(value):.4g})", flush=True)
        if trainer.strategy.broadcast(prune, src=0):
            trainer.should_stop = True
