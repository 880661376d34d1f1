"""Report the monitored metric to the job's Optuna trial after every validation and stop when the pruner says so.

Added by the builders whenever the job runs an Optuna trial (`TrialLink` in the environment). Global rank 0
talks to the study; the decision is broadcast so every rank stops after the same validation."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl

from lightning_llm.errors import UserError
from lightning_llm.tracking.trials import PRUNED_AT, TrialLink


class OptunaPruning(pl.Callback):
    def __init__(self, link: TrialLink, monitor: str, mode: str) -> None:
        if link.pruner != "none" and (mode == "max") != (link.direction == "maximize"):
            raise UserError(f"hydra.sweeper.pruner={link.pruner}: monitor.metric={monitor} (mode={mode}) is what "
                            f"trials report, and the study {link.direction}s; set monitor.mode to match, or "
                            f"hydra.sweeper.pruner=none")
        self.link, self.monitor = link, monitor
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
