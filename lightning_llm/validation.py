"""Checks that run before any work: a config mistake must fail in a second, not after an epoch."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig
from transformers import AutoConfig

from lightning_llm.builders import check_task_pair
from lightning_llm.errors import UserError
from lightning_llm.hardware import check_hardware
from lightning_llm.utils.instantiate import check_targets


def validate_train_config(cfg: DictConfig) -> None:
    for group in ("model", "data", "logger", "callbacks"):
        if cfg.get(group):
            check_targets(cfg[group], group)
    for group in ("model", "data"):
        if not cfg.get(group):
            raise UserError(f"{group} is not set: choose one with {group}=<option>")
    check_task_pair(cfg)
    check_hardware(cfg.hardware)
    check_block_size(cfg)
    if cfg.get("ckpt_path") and cfg.ckpt_path != "last" and not Path(cfg.ckpt_path).is_file():
        raise UserError(f"ckpt_path: file not found: {cfg.ckpt_path}")


def model_context_length(model_cfg: DictConfig) -> int | None:
    """The longest sequence the model takes, read from its config alone (no weights); None if unknown here."""
    try:
        if model_cfg.get("pretrained_model_name_or_path"):
            config = AutoConfig.from_pretrained(model_cfg.pretrained_model_name_or_path,
                                                trust_remote_code=bool(model_cfg.get("trust_remote_code", False)))
        elif model_cfg.get("max_position_embeddings"):
            return int(model_cfg.max_position_embeddings)
        else:
            config = AutoConfig.for_model(model_cfg.get("model_type"))
    except Exception:  # an unloadable model is reported, with its key, when it is built
        return None
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def check_block_size(cfg: DictConfig) -> None:
    """`data.block_size` longer than the model's context would fail in the first forward pass (index error)."""
    block_size = cfg.data.get("block_size")
    context = model_context_length(cfg.model) if block_size else None
    if context and block_size > context:
        source = ("model.pretrained_model_name_or_path" if cfg.model.get("pretrained_model_name_or_path")
                  else "model.max_position_embeddings")
        raise UserError(f"data.block_size={block_size} is larger than the model's context of {context} tokens "
                        f"({source}): lower data.block_size")


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
