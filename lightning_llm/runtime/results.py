"""What a run leaves behind: metrics from the trainer, the HF export and results.json (atomically)."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from lightning_llm.errors import TrainingDivergedError
from lightning_llm.modules.base import VAL_METRICS_KEY
from lightning_llm.runtime.console import hf_progress_bars_off
from lightning_llm.utils.io import write_dir_atomic, write_json_atomic

# What a process killed by SIGTERM reports (128 + 15): schedulers and restart policies see an interrupted job.
PREEMPTED_EXIT_CODE = 143


def collect_metrics(trainer: pl.Trainer, prefix: str) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(prefix)}


def checkpoint_val_metrics(ckpt_path: str | None) -> dict[str, float] | None:
    """The `val/*` metrics a checkpoint was saved with (None: no checkpoint, or one written before they were
    kept); `mmap` keeps this cheap: tensors are not read."""
    if not ckpt_path or not Path(ckpt_path).is_file():
        return None
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    metrics = checkpoint.get(VAL_METRICS_KEY)
    return {str(k): float(v) for k, v in metrics.items()} if metrics else None


def optimized_value(name: str | None, *, val: dict[str, float], val_last: dict[str, float],
                    test: dict[str, float]) -> float | None:
    """What a sweep compares: a best-so-far metric (`<metric>_best`) as the run ends, which covers every
    validation; any other metric at the best checkpoint (the model that is tested and exported), e.g. token
    classification's `val/f1` is the monitored best, not the last epoch's. Non-finite values are None."""
    if not name:
        return None
    value = val_last.get(name) if name.endswith("_best") and name in val_last else {**val, **test}.get(name)
    return value if value is not None and math.isfinite(value) else None


def export_model(trainer: pl.Trainer, model: Any, tokenizer: Any, run_dir: Path) -> Path | None:
    """Write <run>/hf_model (safetensors + tokenizer) on global rank 0, and with LoRA <run>/hf_adapter (the
    adapter alone); a crash leaves no partial folder."""
    if trainer.global_rank != 0:
        return None
    with hf_progress_bars_off():  # a one-shard "Writing model shards" bar says nothing
        if getattr(model, "has_adapter", False):
            write_dir_atomic(run_dir / "hf_adapter", model.export_adapter)
        return write_dir_atomic(run_dir / "hf_model", lambda tmp: model.export(tmp, tokenizer))


def write_results(cfg: DictConfig, trainer: pl.Trainer, *, val_metrics: dict[str, float],
                  val_last: dict[str, float], test_metrics: dict[str, float], best_ckpt: str, hf_dir: Path | None,
                  details: dict[str, Any] | None = None, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """results.json: `val` holds the validation metrics of the best checkpoint (the weights `test` scores and
    `hf_model` holds), `val_last` those of the last validation, `data` what identifies the data (sha256 of its
    files, `CachedTextDataModule.data_fingerprints`)."""
    run_dir = Path(cfg.paths.output_dir)
    name = cfg.get("optimized_metric")
    results = {
        "status": "completed",
        "task_name": cfg.task_name,
        "optimized_metric": {"name": name, "value": optimized_value(name, val=val_metrics, val_last=val_last,
                                                                    test=test_metrics)},
        "val": val_metrics,
        "val_last": val_last,
        "test": test_metrics,
        "best_checkpoint": best_ckpt or None,
        "last_checkpoint": _last_checkpoint(run_dir),
        "hf_model": str(hf_dir) if hf_dir else None,
        **_progress(trainer, best_ckpt),
        "run_dir": str(run_dir),
    }
    if details:  # the task's non-scalar results per stage (`HFTaskModule.stage_details`)
        results["details"] = details
    if data:
        results["data"] = data
    if trainer.global_rank == 0:
        write_json_atomic(run_dir / "results.json", results)
    return results


def _progress(trainer: pl.Trainer, best_ckpt: str) -> dict[str, int]:
    """Steps and epochs trained. Under ddp_spawn the workers' progress never reaches this process's trainer, so
    it is read from the newest checkpoint instead."""
    step, epoch = trainer.global_step, trainer.current_epoch
    last = _last_checkpoint(Path(best_ckpt).parent.parent) if best_ckpt else None
    if step == 0 and last:
        checkpoint = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
        step, epoch = checkpoint.get("global_step", 0), checkpoint.get("epoch", 0) + 1
    return {"global_step": step, "epochs": epoch}


def _last_checkpoint(run_dir: Path) -> str | None:
    last = run_dir / "checkpoints" / "last.ckpt"
    return str(last) if last.exists() else None


def write_failed_results(cfg: DictConfig, error: str, **extra: Any) -> dict[str, Any]:
    """results.json for a run that did not finish: a status (default "failed"), the error, and no metrics, so
    nothing reading it can mistake it for a result. `extra` adds fields (e.g. status="preempted")."""
    run_dir = Path(cfg.paths.output_dir)
    results = {"status": extra.pop("status", "failed"), "error": error, "task_name": cfg.task_name,
               "optimized_metric": {"name": cfg.get("optimized_metric"), "value": None},
               "last_checkpoint": _last_checkpoint(run_dir), "run_dir": str(run_dir), **extra}
    if rank_zero_only.rank == 0:
        write_json_atomic(run_dir / "results.json", results)
    return results


def mark_running(cfg: DictConfig) -> None:
    """results.json says "running" from the moment training starts: a hard kill (SIGKILL, OOM killer) leaves
    that, never a result that looks complete."""
    run_dir = Path(cfg.paths.output_dir)
    if rank_zero_only.rank == 0:
        write_json_atomic(run_dir / "results.json", {"status": "running", "task_name": cfg.task_name,
                                                     "run_dir": str(run_dir)})


@contextmanager
def outcome_recorded(cfg: DictConfig) -> Iterator[None]:
    """results.json only ever describes this run. An older one (same run directory) is removed on entry; once
    training has started (`mark_running`) a run that stops says why: "preempted" (SIGTERM: exit with
    PREEMPTED_EXIT_CODE after saying how to resume), "diverged" (NaN loss), "interrupted" or "failed". Bad input
    found before training is one line on stderr (exit 2) and leaves no results.json."""
    run_dir = Path(cfg.paths.output_dir)
    results_file = run_dir / "results.json"
    if rank_zero_only.rank == 0:
        results_file.unlink(missing_ok=True)
    try:
        yield
    except BaseException as err:
        # A preempted ddp_spawn worker reaches the main process as an exit code, not as the exception.
        if isinstance(err, SIGTERMException) or getattr(err, "exit_code", None) == PREEMPTED_EXIT_CODE:
            hint = f"relaunch the same command with ckpt_path=last paths.output_dir={run_dir}"
            write_failed_results(cfg, "preempted (SIGTERM)", status="preempted", resume=hint)
            print(f"preempted: {hint}", file=sys.stderr)
            raise SystemExit(PREEMPTED_EXIT_CODE) from None
        if isinstance(err, TrainingDivergedError):
            write_failed_results(cfg, str(err), status="diverged")
        elif isinstance(err, (KeyboardInterrupt, SystemExit)) and results_file.exists():
            write_failed_results(cfg, f"interrupted ({type(err).__name__})", status="interrupted")
        elif results_file.exists():
            write_failed_results(cfg, f"{type(err).__name__}: {err}")
        raise
