"""Wall-clock phase stamps of one benchmarked process, written as JSON: `stamp()` for the script's own points and
`PhaseTimer` (a Lightning callback, added to `llm-train` with `+callbacks.bench_phases=...`) for the loop's."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

# Set by the driver: where to write the stamps (one JSON object, rewritten at each stamp).
STAMPS_ENV = "BENCH_STAMPS"


def stamp(name: str, accumulate: bool = False) -> None:
    """Record `time.time()` under `name` (appended to a list when `accumulate`)."""
    path = os.environ.get(STAMPS_ENV)
    if not path:
        return
    stamps: dict[str, Any] = json.loads(Path(path).read_text()) if Path(path).exists() else {}
    if accumulate:
        stamps.setdefault(name, []).append(time.time())
    else:
        stamps[name] = time.time()
    Path(path).write_text(json.dumps(stamps))


class PhaseTimer(pl.Callback):
    """Stamps where Lightning's loop enters and leaves training, each validation and testing."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        stamp("train_start")

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit":
            stamp("eval_start", accumulate=True)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit":
            stamp("eval_end", accumulate=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        stamp("train_end")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        stamp("test_end")
