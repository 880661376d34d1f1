"""Checks that run before any work: a config mistake must fail in a second, not after an epoch."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from lightning_llm.builders import check_task_pair
from lightning_llm.errors import UserError
from lightning_llm.utils.instantiate import check_targets


def validate_train_config(cfg: DictConfig) -> None:
    for group in ("model", "data", "logger", "callbacks"):
        if cfg.get(group):
            check_targets(cfg[group], group)
    for group in ("model", "data"):
        if not cfg.get(group):
            raise UserError(f"{group} is not set: choose one with {group}=<option>")
    check_task_pair(cfg)
    if cfg.get("ckpt_path") and cfg.ckpt_path != "last" and not Path(cfg.ckpt_path).is_file():
        raise UserError(f"ckpt_path: file not found: {cfg.ckpt_path}")


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """`last` means the run directory's checkpoints/last.ckpt; start fresh (and say so) when there is none."""
    if cfg.get("ckpt_path") != "last":
        return cfg.get("ckpt_path")
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    if last.is_file():
        print(f"resuming from {last}")
        return str(last)
    print(f"ckpt_path=last: no {last} yet, starting fresh")
    return None
