"""Load what a run left behind — module, tokenizer, composed config — safely (weights_only, allow-listed class)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from lightning_llm import registry
from lightning_llm.config.targets import target_refusal, upgrade_targets
from lightning_llm.data.tokenizers import load_tokenizer
from lightning_llm.errors import UserError, first_line
from lightning_llm.runtime.builders import tokenizer_dir


def run_dir_of(ckpt_path: str | Path) -> Path:
    """<run>/checkpoints/x.ckpt -> <run>."""
    path = Path(ckpt_path).resolve()
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def load_module(ckpt_path: str | Path, key: str = "ckpt_path", map_location: str = "cpu",
                allowed: tuple[str, ...] = ()) -> Any:
    """Rebuild the LightningModule of a checkpoint from its saved HF config (no download, no pickled code). The
    class it names must be ours or in a package of `allowed` (`allow_targets=`, from the command line)."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise UserError(f"{key}: checkpoint not found: {ckpt_path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise UserError(f"{key}: {ckpt_path} is not a loadable checkpoint: {first_line(err)}") from err
    target = checkpoint.get("lightning_llm_module")
    if not isinstance(target, str):
        raise UserError(f"{key}: {ckpt_path} was not written by lightning-llm (no module class recorded)")
    target = registry.current_target(target)  # checkpoints of earlier versions name older paths
    refusal = target_refusal(target, allowed)
    if refusal is not None:
        raise UserError(f"{key}: {ckpt_path} holds a {target}, which is not allowed: {refusal}")
    cls = get_class(target)
    module = cls(**checkpoint["hyper_parameters"])
    module.load_state_dict(checkpoint["state_dict"])
    return module.eval()


def run_tokenizer(ckpt_path: str | Path, key: str) -> Any:
    """The tokenizer a run saved next to its checkpoints (<run>/tokenizer, else <run>/hf_model): a checkpoint holds
    none. `key` names the setting in the error (llm-eval: ckpt_path, the inference commands: model_path)."""
    run_dir = run_dir_of(ckpt_path)
    for candidate in (tokenizer_dir(run_dir), run_dir / "hf_model"):
        if (candidate / "tokenizer_config.json").is_file():
            return load_tokenizer(str(candidate), key)
    raise UserError(f"{key}: no tokenizer next to {ckpt_path} (looked in {tokenizer_dir(run_dir)} and "
                    f"{run_dir / 'hf_model'})")


def saved_run_config(ckpt_path: str | Path) -> DictConfig | None:
    """The composed config Hydra saved for the run that wrote `ckpt_path`, if it is there."""
    path = run_dir_of(ckpt_path) / ".hydra" / "config.yaml"
    return upgrade_targets(OmegaConf.load(path)) if path.exists() else None


def run_checkpoint(run_dir: Path) -> Path | None:
    """The best checkpoint of a run directory (results.json, else best-*.ckpt), else its last.ckpt."""
    results = run_dir / "results.json"
    if results.is_file():
        best = json.loads(results.read_text()).get("best_checkpoint")
        if best and Path(best).is_file():
            return Path(best)
    candidates = sorted((run_dir / "checkpoints").glob("best*.ckpt")) or sorted((run_dir / "checkpoints").glob("*.ckpt"))
    return candidates[-1] if candidates else None
