"""What a run leaves behind: metrics from the trainer, the HF export and results.json (atomically)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig

from lightning_llm.utils.io import write_dir_atomic, write_json_atomic


def collect_metrics(trainer: pl.Trainer, prefix: str) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(prefix)}


def export_model(trainer: pl.Trainer, model: Any, tokenizer: Any, run_dir: Path) -> Path | None:
    """Write <run>/hf_model (safetensors + tokenizer) on global rank 0; a crash leaves no partial folder."""
    if trainer.global_rank != 0:
        return None
    return write_dir_atomic(run_dir / "hf_model", lambda tmp: model.export(tmp, tokenizer))


def write_results(cfg: DictConfig, trainer: pl.Trainer, *, val_metrics: dict[str, float],
                  test_metrics: dict[str, float], best_ckpt: str, hf_dir: Path | None) -> dict[str, Any]:
    run_dir = Path(cfg.paths.output_dir)
    name = cfg.get("optimized_metric")
    all_metrics = {**val_metrics, **test_metrics}
    value = all_metrics.get(name) if name else None
    last = run_dir / "checkpoints" / "last.ckpt"
    results = {
        "status": "completed",
        "task_name": cfg.task_name,
        "optimized_metric": {"name": name, "value": value if value is None or math.isfinite(value) else None},
        "val": val_metrics,
        "test": test_metrics,
        "best_checkpoint": best_ckpt or None,
        "last_checkpoint": str(last) if last.exists() else None,
        "hf_model": str(hf_dir) if hf_dir else None,
        "global_step": trainer.global_step,
        "epochs": trainer.current_epoch,
        "run_dir": str(run_dir),
    }
    if trainer.global_rank == 0:
        write_json_atomic(run_dir / "results.json", results)
    return results
