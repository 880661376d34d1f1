"""Training throughput (tokens/s, samples/s, step time, MFU, peak memory) without a host sync per step."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch

from lightning_llm import compat
from lightning_llm.utils.flops import matmul_params, mfu, peak_flops


def count_tokens(batch: Any) -> tuple[torch.Tensor | int, int]:
    """(non-padding tokens, samples) of a batch: the attention mask's sum when there is one, else every
    `input_ids` position (packed blocks). The token count stays a device tensor: reading it would sync."""
    if not isinstance(batch, Mapping) or "input_ids" not in batch:
        return 0, 0
    input_ids = batch["input_ids"]
    mask = batch.get("attention_mask")
    tokens = mask.sum() if isinstance(mask, torch.Tensor) else input_ids.numel()
    return tokens, int(input_ids.shape[0])


class ThroughputCallback(pl.Callback):
    """Logs `train/tokens_per_sec`, `train/samples_per_sec`, `train/step_time` (seconds per optimizer step) and,
    on CUDA, `train/mfu` and `train/peak_memory_gib`, every `trainer.log_every_n_steps` optimizer steps.

    Timing uses `time.perf_counter` over the whole interval (data loading, forward, backward, optimizer, hooks),
    with one `torch.cuda.synchronize()` per interval (CUDA runs ahead of the host, so an unsynced clock reads
    the launch time, not the work). Token counts accumulate on the device and are read at that same point.
    The first `warmup_steps` optimizer steps (allocator, cuDNN autotuning, `torch.compile`) and validation
    runs are left out. Under DDP the token and sample counts are summed over ranks (global throughput).

    MFU = achieved model FLOP/s / (peak FLOP/s x devices), with model FLOPs = 6 x N x tokens, N = the parameters
    that multiply (embedding lookups excluded; forward 2N + backward 4N per token). The attention-score term
    (12 x layers x hidden x seq per token) is left out, so MFU is slightly under-stated for long sequences.
    Peak FLOP/s comes from `lightning_llm.utils.flops` for the GPU and precision in use;
    `peak_flops_per_device` overrides it (a GPU missing from the table, other clocks).
    """

    def __init__(self, warmup_steps: int = 2, log_every_n_steps: int | None = None,
                 peak_flops_per_device: float | None = None) -> None:
        self.warmup_steps = max(0, int(warmup_steps))
        self.log_every_n_steps = log_every_n_steps
        self.peak_flops_per_device = peak_flops_per_device
        self._reset_window()
        self._t0: float | None = None
        self._last_step = self._warm_until = 0
        self._val_started: float | None = None
        self._flops_per_token = 0.0
        self._peak: float | None = None

    def _reset_window(self) -> None:
        self._tokens: torch.Tensor | int = 0
        self._samples = 0
        self._steps = 0

    def _every(self, trainer: pl.Trainer) -> int:
        return int(self.log_every_n_steps if self.log_every_n_steps is not None else trainer.log_every_n_steps)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reset_window()
        self._t0, self._last_step = None, trainer.global_step
        self._warm_until = trainer.global_step + self.warmup_steps  # a resumed run warms up again
        # The wrapped transformers model when there is one: it knows its (possibly tied) output projection.
        inner = getattr(pl_module, "model", None)
        self._flops_per_token = 6.0 * matmul_params(inner if isinstance(inner, torch.nn.Module) else pl_module)
        device = trainer.strategy.root_device
        self._peak = None
        if device.type == "cuda":
            self._peak = self.peak_flops_per_device or peak_flops(device, trainer.precision)
            torch.cuda.reset_peak_memory_stats(device)
        if self.warmup_steps == 0:
            self._sync(device)
            self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._t0 is not None:
            tokens, samples = count_tokens(batch)
            self._tokens = self._tokens + tokens
            self._samples += samples
        if trainer.global_step == self._last_step:  # gradient accumulation: no optimizer step yet
            return
        stepped = trainer.global_step - self._last_step
        self._last_step = trainer.global_step
        device = trainer.strategy.root_device
        if self._t0 is None:
            if trainer.global_step >= self._warm_until:
                self._sync(device)
                self._t0 = time.perf_counter()
                self._reset_window()
            return
        self._steps += stepped
        every = self._every(trainer)
        if every > 0 and trainer.global_step % every == 0:
            self._sync(device)
            now = time.perf_counter()
            self._log(trainer, self._metrics(trainer, now - self._t0))
            self._t0 = now
            self._reset_window()

    def _metrics(self, trainer: pl.Trainer, elapsed: float) -> dict[str, float]:
        tokens = self._tokens if isinstance(self._tokens, torch.Tensor) else torch.tensor(self._tokens)
        counts = torch.stack([tokens.to(torch.float64).cpu(), torch.tensor(float(self._samples), dtype=torch.float64)])
        if trainer.world_size > 1:
            counts = trainer.strategy.reduce(counts.to(trainer.strategy.root_device), reduce_op="sum").cpu()
        n_tokens, n_samples = counts.tolist()
        elapsed = max(elapsed, 1e-9)
        metrics = {"train/tokens_per_sec": n_tokens / elapsed, "train/samples_per_sec": n_samples / elapsed,
                   "train/step_time": elapsed / max(self._steps, 1)}
        device = trainer.strategy.root_device
        if device.type == "cuda":
            if self._peak:
                metrics["train/mfu"] = mfu(n_tokens / elapsed, self._flops_per_token, self._peak, trainer.world_size)
            metrics["train/peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        return metrics

    @staticmethod
    def _log(trainer: pl.Trainer, metrics: dict[str, float]) -> None:
        """Straight to the loggers, at the step Lightning writes `train/loss` with (as LearningRateMonitor does),
        and into `callback_metrics` for the progress bar and sweeps. Not `self.log`: it turns each number into a
        device tensor and costs ~1 ms of Python per key in Lightning's result collection."""
        if trainer.is_global_zero:
            step = compat.batches_that_stepped(trainer)
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)
        trainer.callback_metrics.update({key: torch.tensor(value) for key, value in metrics.items()})

    @staticmethod
    def _sync(device: torch.device) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._t0 is not None and not trainer.sanity_checking:
            self._sync(trainer.strategy.root_device)
            self._val_started = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._val_started is not None and self._t0 is not None:
            self._sync(trainer.strategy.root_device)
            self._t0 += time.perf_counter() - self._val_started  # validation time is not training time
        self._val_started = None
