"""A progress bar that shows the training loss and throughput without reading a tensor back every step."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

# callback_metrics key -> label in the bar
_TRAIN_ITEMS = {"train/loss": "loss", "train/tokens_per_sec": "tok/s"}


class LogIntervalProgressBar(pl.callbacks.RichProgressBar):
    """Lightning's rich progress bar, with `loss` and `tok/s` read every `trainer.log_every_n_steps` steps.

    Lightning converts every metric logged with `prog_bar=True` to a Python number after every batch (in its
    logger connector, whether a bar is shown or not): on a GPU each conversion waits for the device, a host sync
    per step. Our modules therefore log `train/loss` without `prog_bar`; this bar picks it (and
    `train/tokens_per_sec` from `ThroughputCallback`) out of `trainer.callback_metrics` at the logging interval
    only, when the loggers read them anyway.
    """

    def __init__(self, refresh_rate: int = 10, **kwargs: Any) -> None:
        """`refresh_rate`: redraws per second at most. Lightning's default (100) wakes its refresh thread every
        10 ms, and each wake takes the GIL and a core from the training threads (docs/benchmarks.md)."""
        super().__init__(refresh_rate=refresh_rate, **kwargs)
        self._items: dict[str, Any] | None = None
        self._train_items: dict[str, float | str] = {}
        self._read_at_step = -1

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """Between logging steps of training the items cannot change: the last ones are shown again (collecting
        them costs Lightning time on every batch)."""
        every = max(int(trainer.log_every_n_steps), 1)
        step = trainer.global_step
        at_log_step = trainer.training and step != self._read_at_step and step % every == 0
        if at_log_step:
            self._read_at_step = step
            metrics = trainer.callback_metrics
            self._train_items = {label: float(metrics[key]) if label == "loss" else f"{float(metrics[key]):,.0f}"
                                 for key, label in _TRAIN_ITEMS.items() if key in metrics}
        if at_log_step or not trainer.training or self._items is None:
            self._items = {**super().get_metrics(trainer, pl_module), **self._train_items}
        return self._items
