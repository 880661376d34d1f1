"""ThroughputCallback and LogIntervalProgressBar: what they log and show, that padding is not counted, that
tensors are read back (a sync on GPU) only at log intervals."""

from __future__ import annotations

from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import Logger

from lightning_llm.callbacks import LogIntervalProgressBar, ThroughputCallback
from lightning_llm.callbacks.throughput import count_tokens
from lightning_llm.runtime import builders

BATCH, SEQ, REAL = 4, 8, 5  # every row: 5 real tokens, 3 padding


class CaptureLogger(Logger):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, float]] = []

    @property
    def name(self) -> str:
        return "capture"

    @property
    def version(self) -> str:
        return "0"

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.rows.append(dict(metrics))


class TinyModule(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(16, 4)
        self.head = torch.nn.Linear(4, 1)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        hidden = self.embedding(batch["input_ids"]) * batch["attention_mask"].unsqueeze(-1)
        loss = self.head(hidden).pow(2).mean()
        self.log("train/loss", loss, on_step=True, on_epoch=False)  # as our modules do: not prog_bar
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def count_host_reads(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count `Tensor.item()`/`.tolist()` calls: on a GPU each one waits for the device (a sync)."""
    reads = {"item": 0, "tolist": 0}
    for name in reads:
        original = getattr(torch.Tensor, name)

        def counted(self: torch.Tensor, *args: Any, _name: str = name, _original: Any = original) -> Any:
            reads[_name] += 1
            return _original(self, *args)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return reads


class ReadsPerStep(pl.Callback):
    """Attributes host reads to the optimizer step during (or right after, the loggers' flush) which they happen."""

    def __init__(self, reads: dict[str, int]) -> None:
        self.reads, self.seen, self.by_step = reads, 0, {}

    def _close(self, trainer: pl.Trainer) -> None:
        total = sum(self.reads.values())
        self.by_step[trainer.global_step] = self.by_step.get(trainer.global_step, 0) + total - self.seen
        self.seen = total

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self._close(trainer)

    def on_train_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self._close(trainer)


def padded_batches(n: int) -> list[dict[str, torch.Tensor]]:
    mask = torch.zeros(BATCH, SEQ, dtype=torch.long)
    mask[:, :REAL] = 1
    return [{"input_ids": torch.randint(1, 16, (BATCH, SEQ)) * mask, "attention_mask": mask} for _ in range(n)]


def test_count_tokens_excludes_padding_and_counts_packed_blocks_whole() -> None:
    padded = padded_batches(1)[0]
    tokens, samples = count_tokens(padded)
    assert isinstance(tokens, torch.Tensor)  # stays on the device: no host sync per step
    assert (int(tokens), samples) == (BATCH * REAL, BATCH)
    assert count_tokens({"input_ids": torch.ones(3, 16, dtype=torch.long)}) == (48, 3)  # packed: no mask
    assert count_tokens(torch.ones(2, 2)) == (0, 0)  # not a token batch: counted as nothing


@pytest.mark.parametrize("accumulate", [1, 2])
def test_logs_throughput_every_n_steps_after_warmup_syncing_only_then(monkeypatch, tmp_path, accumulate) -> None:
    syncs: list[torch.device] = []
    monkeypatch.setattr(ThroughputCallback, "_sync", staticmethod(syncs.append))
    reads_by_step = ReadsPerStep(count_host_reads(monkeypatch))
    logger = CaptureLogger()
    max_steps, every, warmup = 8, 2, 2
    trainer = pl.Trainer(accelerator="cpu", max_steps=max_steps, log_every_n_steps=every, logger=logger,
                         accumulate_grad_batches=accumulate,
                         callbacks=[ThroughputCallback(warmup_steps=warmup), LogIntervalProgressBar(), reads_by_step],
                         enable_checkpointing=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    loader = torch.utils.data.DataLoader(padded_batches(max_steps * accumulate), batch_size=None)
    trainer.fit(TinyModule(), train_dataloaders=loader)

    rows = [r for r in logger.rows if "train/tokens_per_sec" in r]
    assert len(rows) == (max_steps - warmup) // every  # steps 4, 6, 8: warm-up steps 1-2 are left out
    for row in rows:
        assert row["train/tokens_per_sec"] > 0 and row["train/step_time"] > 0
        # time cancels out: tokens per sample must be the non-padding count, not the padded length
        assert row["train/tokens_per_sec"] / row["train/samples_per_sec"] == pytest.approx(REAL)
        assert "train/mfu" not in row and "train/peak_memory_gib" not in row  # GPU only
    assert len(syncs) == 1 + len(rows)  # window start + one per log, not one per step
    # Tensor values read back to the host (each a CUDA sync on GPU): only on the logging steps, none in between.
    steps_with_reads = {step for step, n in reads_by_step.by_step.items() if n}
    assert steps_with_reads - {0} <= set(range(every, max_steps + 1, every))  # the loggers flush there too
    assert "train/tokens_per_sec" in trainer.callback_metrics
    bar_items = trainer.progress_bar_callback.get_metrics(trainer, trainer.lightning_module)
    assert {"loss", "tok/s"} <= set(bar_items) and isinstance(bar_items["loss"], float)


def test_default_callbacks_include_throughput(compose_cfg) -> None:
    callbacks = builders.build_callbacks(compose_cfg([]))
    assert any(isinstance(c, ThroughputCallback) for c in callbacks)
    assert not any(isinstance(c, ThroughputCallback) for c in builders.build_callbacks(compose_cfg(["callbacks=none"])))


def test_progress_bar_redraws_at_most_ten_times_a_second(compose_cfg) -> None:
    """Lightning's rich bar defaults to 100 refreshes/s, a thread waking every 10 ms beside the training threads."""
    (bar,) = [c for c in builders.build_callbacks(compose_cfg([])) if isinstance(c, LogIntervalProgressBar)]
    assert bar.refresh_rate == LogIntervalProgressBar().refresh_rate == 10
    (bar,) = [c for c in builders.build_callbacks(compose_cfg(["callbacks.rich_progress_bar.refresh_rate=2"]))
              if isinstance(c, LogIntervalProgressBar)]
    assert bar.refresh_rate == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_mfu_and_peak_memory_on_gpu(tmp_path) -> None:
    logger = CaptureLogger()
    trainer = pl.Trainer(accelerator="gpu", devices=1, max_steps=6, log_every_n_steps=2, logger=logger,
                         callbacks=[ThroughputCallback(warmup_steps=2, peak_flops_per_device=1e12)],
                         enable_progress_bar=False, enable_checkpointing=False, default_root_dir=tmp_path)
    trainer.fit(TinyModule(), train_dataloaders=torch.utils.data.DataLoader(padded_batches(6), batch_size=None))
    rows = [r for r in logger.rows if "train/mfu" in r]
    assert rows and all(0 < r["train/mfu"] < 1 and r["train/peak_memory_gib"] > 0 for r in rows)
