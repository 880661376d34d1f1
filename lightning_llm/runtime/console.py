"""What a run prints: a short config summary, no known-harmless library noise, and one final line naming the
output directory.

The noise is silenced where it comes from, message by message, so any other warning still shows:
- warnings: `KNOWN_HARMLESS_WARNINGS` (message, category, module that warns);
- Lightning's info lines: `LIGHTNING_INFO_DROPPED` (its logger `pytorch_lightning.utilities.rank_zero`), and
  "Seed set to N" (`lightning_fabric.utilities.seed`; the seed is in the config summary).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

# (message regex, category, module regex): each seen in a default run, each harmless for us.
KNOWN_HARMLESS_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    # torchdata's StatefulDataLoader calls torch.set_vital, deprecated in torch 2.10+ (no effect on loading).
    ("'set_vital' is deprecated", UserWarning, r"torchdata\.stateful_dataloader"),
    # Lightning's own pytree helper still builds LeafSpec (torch 2.10+ deprecation, behaviour unchanged).
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning, r"pytorch_lightning\.utilities\._pytree"),
)

# Info lines of Lightning that say nothing about this run, matched at the start of the message.
LIGHTNING_INFO_DROPPED: tuple[str, ...] = (
    "💡 Tip:",  # advertisements for litlogger / litmodels
    "GPU available: False, used: False",  # the config summary names the hardware (GPU lines stay)
    "TPU available: False",
    "HPU available: False",
    "Loading `train_dataloader` to estimate number of stepping batches",
    "Trainer already configured with model summary callbacks",  # ours: CompactModelSummary
    # always followed by "Restored all states" / "Loaded model weights from the checkpoint at <same path>"
    "Restoring states from the checkpoint path at",
)
# "`Trainer(val_check_interval=1.0)` was configured so validation will run at the end of the training epoch.":
# the default value explained; the `=1` variants (one batch) stay.
_DEFAULT_EXPLAINED = re.compile(r"`Trainer\(\w+=1\.0\)` was configured so ")
_SEED_SET = re.compile(r"(\[rank: \d+\] )?Seed set to ")


class _DropMessages(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...], patterns: tuple[re.Pattern[str], ...]) -> None:
        super().__init__()
        self.prefixes, self.patterns = prefixes, patterns

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith(self.prefixes) or any(p.match(message) for p in self.patterns))


_LIGHTNING_FILTER = _DropMessages(LIGHTNING_INFO_DROPPED, (_DEFAULT_EXPLAINED,))
_SEED_FILTER = _DropMessages((), (_SEED_SET,))


def quiet_known_noise() -> None:
    """Install the narrow filters above (calling it again adds nothing). `cli.launch` calls it before Hydra starts."""
    for message, category, module in KNOWN_HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_LIGHTNING_FILTER)
    logging.getLogger("lightning_fabric.utilities.seed").addFilter(_SEED_FILTER)


@contextmanager
def hf_progress_bars_off() -> Iterator[None]:
    """No transformers progress bars inside (e.g. the one-shard "Writing model shards" bar of save_pretrained)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


# ----------------------------------------------------------------------------------------------- config summary
def shown_path(path: str | os.PathLike[str]) -> str:
    """A path as the user would type it: relative to the current directory when inside it."""
    absolute = Path(path).absolute()
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


def _get(cfg: DictConfig, key: str) -> Any:
    try:
        return OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
    except Exception:  # an interpolation that does not resolve here: leave it out of the summary
        return None


def _name(target: Any) -> str:
    return str(target).rsplit(".", 1)[-1] if target else "?"


def _model_line(cfg: DictConfig) -> str:
    pretrained = _get(cfg, "model.pretrained_model_name_or_path")
    if pretrained:
        origin = f"from {pretrained}"
    else:
        sizes = [f"{label} {_get(cfg, key)}" for key, label in (("model.hidden_size", "hidden"),
                                                                ("model.num_hidden_layers", "layers"),
                                                                ("model.num_attention_heads", "heads"))
                 if _get(cfg, key) is not None]
        kind = _get(cfg, "model.model_type")
        origin = (f"{kind} " if kind else "") + "from scratch" + (f" ({', '.join(sizes)})" if sizes else "")
    peft = _get(cfg, "model.peft")
    return f"{_name(_get(cfg, 'model._target_'))}, {origin}" + (f", peft {peft}" if peft else "")


def _data_line(cfg: DictConfig) -> str:
    name = _get(cfg, "data.dataset_name")
    files = [str(_get(cfg, f"data.{split}_file")) for split in ("train", "validation", "test")
             if _get(cfg, f"data.{split}_file")]
    if name:
        config = _get(cfg, "data.dataset_config")
        source = f"hub dataset {name}" + (f" ({config})" if config else "")
    elif files:
        source = "files " + ", ".join(files)
    else:
        source = "bundled demo data"
    details = [f"{key} {_get(cfg, f'data.{key}')}" for key in ("batch_size", "max_length", "block_size")
               if _get(cfg, f"data.{key}") is not None]
    return f"data: {_name(_get(cfg, 'data._target_'))} on {source}" + (f", {', '.join(details)}" if details else "")


def _trainer_line(cfg: DictConfig) -> str:
    steps = _get(cfg, "trainer.max_steps")
    budget = f"max_steps {steps}" if isinstance(steps, int) and steps > 0 else \
        f"max_epochs {_get(cfg, 'trainer.max_epochs')}"
    devices, strategy = _get(cfg, "hardware.devices"), _get(cfg, "hardware.strategy")
    hardware = f"{_get(cfg, 'hardware.accelerator')} x{devices}" + \
               (f" {strategy}" if strategy and strategy != "auto" else "") + f", {_get(cfg, 'hardware.precision')}"
    loggers = ", ".join(_get(cfg, "logger") or {}) or "none"
    return f"train: {budget} on {hardware}, seed {_get(cfg, 'seed')}, loggers: {loggers}"


def config_summary(cfg: DictConfig, tree_file: str | Path | None = None) -> list[str]:
    """A few lines instead of the config tree: task, model, data, budget + hardware, run directory."""
    lines = [f"{_get(cfg, 'task_name')}: {_model_line(cfg)}", _data_line(cfg)]
    if _get(cfg, "trainer") is not None:
        lines.append(_trainer_line(cfg))
    run = f"run dir: {shown_path(cfg.paths.output_dir)}"
    if tree_file is not None:
        run += f" (full config: {Path(tree_file).name}; print_config=full prints it)"
    return [*lines, run]


# ----------------------------------------------------------------------------------------------- final line
_STARTED = time.time()


def final_line(run_dir: str | os.PathLike[str], hf_model: str | None = None) -> str:
    """`run: <dir> (results.json, hf_model/)`: the run directory and what it holds for the user."""
    run = Path(run_dir)
    names = [name for name in ("results.json", "eval_results.json") if (run / name).is_file()]
    if hf_model and Path(hf_model).is_dir():
        names.append(f"{Path(hf_model).name}/")
    return f"run: {shown_path(run)}" + (f" ({', '.join(names)})" if names else "")


def failed_run_line(run_dir: str | os.PathLike[str] | None) -> str | None:
    """After a failure: `run: <dir> (results.json: status diverged)` when this process recorded the outcome in
    results.json (training had started); None when nothing but the log was written."""
    if not run_dir:
        return None
    results = Path(run_dir) / "results.json"
    try:
        if results.stat().st_mtime < _STARTED:
            return None  # an earlier run's, in a reused directory
        status = json.loads(results.read_text()).get("status")
    except (OSError, ValueError):
        return None
    return f"run: {shown_path(run_dir)} (results.json: status {status})"
