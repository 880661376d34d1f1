"""Checks that run before any work: a config mistake must fail in a second, not after an epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue
from transformers import AutoConfig

from lightning_llm import registry
from lightning_llm.config.schema import Range, check_node, describe
from lightning_llm.config.secrets import check_config_secrets
from lightning_llm.config.targets import allowed_targets, check_targets
from lightning_llm.errors import UserError, first_line
from lightning_llm.runtime.builders import check_task_pair, target_class
from lightning_llm.runtime.hardware import check_hardware
from lightning_llm.runtime.hub import check_repo_id
from lightning_llm.tracking.jobs import in_multirun

# Loop settings whose Lightning type hints allow nonsense (`max_epochs=-2` means nothing).
TRAINER_RANGES = {"max_epochs": Range(-1), "max_steps": Range(-1), "min_epochs": Range(0), "min_steps": Range(0),
                  "accumulate_grad_batches": Range(1), "gradient_clip_val": Range(0), "log_every_n_steps": Range(1),
                  "check_val_every_n_epoch": Range(1), "num_sanity_val_steps": Range(-1),
                  "val_check_interval": Range(0, low_open=True)}
_ROOT_TYPES = {"seed": int, "train": bool, "test": bool, "export": bool}
_ROOT_CHOICES = {"sweep_keep": ("best", "all")}
SWEEP_PUSH = ("push_to_hub: not in a sweep (every job would push to the same repository); push the run you pick with "
              "llm-push model_path=<its directory> repo_id=...")


def validate_train_config(cfg: DictConfig) -> None:
    # every `_target_` anywhere in the config, before anything is imported or built
    check_targets(cfg, allowed=allowed_targets(cfg))
    check_config_secrets(cfg)
    for group in ("model", "data"):
        if not cfg.get(group):
            raise UserError(f"{group} is not set: choose one with {group}=<option>")
    check_settings(cfg)
    if cfg.get("push_to_hub") and in_multirun():  # (a sweep the command line did not show: the precheck's backstop)
        raise UserError(SWEEP_PUSH)
    check_task_pair(cfg)
    check_block_size(cfg)
    check_hardware(cfg.hardware)
    if cfg.get("ckpt_path") and cfg.ckpt_path != "last" and not Path(cfg.ckpt_path).is_file():
        raise UserError(f"ckpt_path: file not found: {cfg.ckpt_path}")
    resume_from = cfg.ckpt_path if cfg.get("ckpt_path") != "last" else last_checkpoint(cfg.paths.output_dir)
    if resume_from:
        check_resume_checkpoint(cfg, resume_from)


def _resolved(node: DictConfig, where: str) -> dict[str, Any]:
    """A node as plain values; a value that cannot be resolved yet (e.g. `${hydra:...}` before Hydra runs the job)
    is left out here and checked when the job runs. A required value left `???` fails here (`instantiate` would
    drop it silently)."""
    values = {}
    for key in node:
        try:
            value = node[key]
            values[str(key)] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        except MissingMandatoryValue as err:
            raise UserError(f"{where}.{key} is required (it is ???): set {where}.{key}=...") from err
        except (InterpolationResolutionError, ValueError):
            continue
    return values


def check_settings(cfg: DictConfig) -> None:
    """Every setting of `model`, `data` and `trainer` against its constructor's signature (unknown key with a
    suggestion, type, range) and the root switches' types: one line naming the key."""
    for group in ("model", "data"):
        node = cfg.get(group)
        if isinstance(node, DictConfig) and "_target_" in node:
            cls = target_class(node, group, allowed=allowed_targets(cfg))
            exclude = getattr(cls, "derived_kwargs", frozenset()) | getattr(cls, "data_kwargs", frozenset())
            check_node(_resolved(node, group), group, cls, exclude)
    trainer = cfg.get("trainer")
    if isinstance(trainer, DictConfig):
        values = _resolved(trainer, "trainer")
        check_node(values, "trainer", pl.Trainer)
        for key, bounds in TRAINER_RANGES.items():
            reason = bounds.violation(values.get(key))
            if reason:
                raise UserError(f"trainer.{key}={values[key]!r} is out of range: {reason}")
    for key, kind in _ROOT_TYPES.items():
        value = cfg.get(key)
        if value is not None and not (isinstance(value, kind) and not (kind is int and isinstance(value, bool))):
            raise UserError(f"{key}={value!r}: must be {describe(kind)}")
    for key, choices in _ROOT_CHOICES.items():
        value = cfg.get(key)
        if value is not None and value not in choices:
            raise UserError(f"{key}={value!r}: use one of {', '.join(choices)}")
    check_push_settings(cfg)


def check_push_settings(cfg: DictConfig) -> None:
    """`push_to_hub=<repo id>` pushes `hf_model/`, so it needs `export=true`; `hub.*` are its options."""
    repo_id = cfg.get("push_to_hub")
    if repo_id is None:
        return
    check_repo_id(repo_id, "push_to_hub")
    if not cfg.get("export", True):
        raise UserError("push_to_hub: pushes the exported model (hf_model/), and export=false: drop export=false")
    hub = cfg.get("hub") or {}
    if not isinstance(hub.get("private", False), bool):
        raise UserError(f"hub.private={hub.get('private')!r}: must be true or false")
    for key in ("revision", "commit_message"):
        if hub.get(key) is not None and not isinstance(hub.get(key), str):
            raise UserError(f"hub.{key}={hub.get(key)!r}: must be a string or null")


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
    """`data.block_size` (or a chat data module's `data.max_length`, packed rows included) longer than the model's
    context would fail in the first forward pass (index error)."""
    key = "max_length" if str(cfg.data.get("_target_", "")).endswith("ChatDataModule") else "block_size"
    block_size = cfg.data.get(key)
    context = model_context_length(cfg.model) if block_size else None
    if context and block_size > context:
        source = ("model.pretrained_model_name_or_path" if cfg.model.get("pretrained_model_name_or_path")
                  else "model.max_position_embeddings")
        raise UserError(f"data.{key}={block_size} is larger than the model's context of {context} tokens "
                        f"({source}): lower data.{key}")


def last_checkpoint(run_dir: str | Path) -> str | None:
    """The newest of <run>/checkpoints/last*.ckpt (last-v1.ckpt exists only with Lightning's version counter)
    and <run>/hpc_ckpt_*.ckpt (what Lightning's SLURM auto-requeue saves on SIGUSR1)."""
    run_dir = Path(run_dir)
    candidates = [*(run_dir / "checkpoints").glob("last*.ckpt"), *run_dir.glob("hpc_ckpt_*.ckpt")]
    return str(max(candidates, key=lambda p: p.stat().st_mtime)) if candidates else None


def check_resume_checkpoint(cfg: DictConfig, path: str | Path) -> None:
    """The checkpoint loads with `weights_only=True` (primitives and tensors only, no pickled code) and holds the
    configured model class. `mmap` keeps this cheap: tensors are not read."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:
        raise UserError(f"ckpt_path: {path} does not load safely (weights_only=True): "
                        f"{first_line(err)}") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "loops" not in checkpoint:
        raise UserError(f"ckpt_path: {path} is not a Lightning training checkpoint (no state_dict/loops)")
    saved = checkpoint.get("lightning_llm_module")
    if isinstance(saved, str) and saved.startswith("lightning_llm.") and \
            get_class(registry.current_target(saved)) is not target_class(cfg.model, "model", allowed_targets(cfg)):
        raise UserError(f"ckpt_path: {path} holds a {saved.rsplit('.', 1)[-1]}, but model._target_ is "
                        f"{cfg.model._target_}: pick the model= option the checkpoint was trained with")
    if "optimizer_states" not in checkpoint:
        raise UserError(f"ckpt_path: {path} holds weights only (a best-* checkpoint): resume from last.ckpt "
                        f"(ckpt_path=last), or fine-tune from the run's export with "
                        f"model.pretrained_model_name_or_path=<run>/hf_model")


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """`last` means the run directory's newest last.ckpt; start fresh (and say so) when there is none."""
    if cfg.get("ckpt_path") != "last":
        return cfg.get("ckpt_path")
    last = last_checkpoint(cfg.paths.output_dir)
    if last:
        print(f"resuming from {last}")
        return last
    print(f"ckpt_path=last: no checkpoint in {Path(cfg.paths.output_dir) / 'checkpoints'} yet, starting fresh")
    return None
