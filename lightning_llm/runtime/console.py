"""What a run prints: a short config summary, no known-harmless library noise, and one final line naming the
output directory.

The noise is silenced where it comes from, message by message, so any other warning still shows:
- warnings: `KNOWN_HARMLESS_WARNINGS` (message, category, module that warns);
- transformers' one-time notices that are false alarms here: `TRANSFORMERS_NOISE` (logger name, message);
- Lightning's info lines: `LIGHTNING_INFO_DROPPED` (its logger `pytorch_lightning.utilities.rank_zero`), and
  "Seed set to N" (`lightning_fabric.utilities.seed`; the seed is in the config summary);
- transformers' LOAD REPORT table (weights `from_pretrained` did not match) becomes one plain line
  (`load_report_line`).
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
    # Lightning's SLURM detection on any machine with `srun` on PATH (a login node, a SLURM job's batch script):
    # it suggests `srun python ...`, while our multi-node path is `-m hydra/launcher=slurm` (docs/slurm.md).
    ("The `srun` command is available on your system but is not used", UserWarning,
     r"lightning_fabric\.plugins\.environments\.slurm"),
    # A small data set or a debug limit with fewer batches than log_every_n_steps: only the step-level train/
    # curves are sparse; val/test metrics and results.json are per epoch/split (docs/configuration.md's logging).
    (r"The number of training batches \(\d+\) is smaller than the logging interval", UserWarning,
     r"pytorch_lightning\.loops\.fit_loop"),
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


# torchao (the compress extra) is imported by transformers whenever it is installed. Its PyPI wheel ships CUDA kernels
# that fail to load on CPU-only torch and it warns that Triton is missing (neither is used on CPU), and torch warns
# that torchao registers its enums with pytree: logger name -> the message dropped.
TORCHAO_IMPORT_NOISE: dict[str, re.Pattern[str]] = {
    "torchao": re.compile(r"Failed to load .*: Could not load this library"),
    "torchao.kernel.intmm": re.compile(r"Warning: Detected no triton"),
    "torch.utils._pytree": re.compile(r".* is an Enum subclass and is now natively supported by torch\.compile"),
}
# transformers' one-time notices that are false alarms for our runs: logger name -> the message dropped.
TRANSFORMERS_NOISE: dict[str, re.Pattern[str]] = {
    # Packed causal-LM blocks have no padding and no mask by design, but GPT-2's pad id is its EOS/BOS id, which
    # every packed block holds between documents; padded batches always carry their attention_mask.
    # `loss_type=None`: a from-scratch config has no loss_type and the default loss is the one we want.
    "transformers.modeling_utils": re.compile(
        r"We strongly recommend passing in an `attention_mask` since your input_ids may be padded"
        r"|`loss_type=None` was set in the config but it is unrecognized"),
}
_LIGHTNING_FILTER = _DropMessages(LIGHTNING_INFO_DROPPED, (_DEFAULT_EXPLAINED,))
_IMPORT_FILTERS = {name: _DropMessages((), (pattern,))
                   for name, pattern in {**TORCHAO_IMPORT_NOISE, **TRANSFORMERS_NOISE}.items()}
_SEED_FILTER = _DropMessages((), (_SEED_SET,))

# transformers 5's load report (utils/loading_report.py): a table of the weights `from_pretrained` did not match
# (a new classification head is MISSING, a dropped pre-training head UNEXPECTED), with ANSI codes and notes, logged
# as one warning of its logger "transformers.modeling_utils". It becomes one plain line.
_LOAD_REPORT = re.compile(r"^(?P<cls>\w+) LOAD REPORT from: (?P<source>.*)$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_BRACES = re.compile(r"\{([^}]*)\}")
_LOAD_STATUS = {"MISSING": "newly initialised: train them", "UNEXPECTED": "in the checkpoint but unused",
                "MISMATCH": "reinitialised (shape mismatch)", "CONVERSION": "failed to convert"}


def _keys_in(pattern: str) -> int:
    """How many weight names one row of the report stands for: `layers.{0, 1}.w` is 2, `layers.{0...11}.w` 12."""
    count = 1
    for group in _BRACES.findall(pattern):
        if "..." in group:
            low, _, high = group.partition("...")
            count *= int(high) - int(low) + 1 if low.strip().isdigit() and high.strip().isdigit() else 1
        else:
            count *= len(group.split(","))
    return count


def _where(patterns: list[str], shown: int = 3) -> str:
    """The modules the weights belong to (`classifier.*`), a few of them."""
    modules = list(dict.fromkeys(p.rsplit(".", 1)[0] + ".*" if "." in p else p for p in patterns))
    return ", ".join(modules[:shown]) + (f" and {len(modules) - shown} more" if len(modules) > shown else "")


def load_report_line(message: str) -> str | None:
    """transformers' multi-line LOAD REPORT as one plain line, e.g. `model: ModernBertForSequenceClassification from
    <dir>: 2 weights newly initialised: train them (classifier.*); 1 in the checkpoint but unused (decoder.*)`; None
    for any other message (or a report of a shape this does not read: it is then left as it is)."""
    lines = _ANSI.sub("", message).splitlines()
    head = _LOAD_REPORT.match(lines[0].strip()) if lines else None
    if head is None:
        return None
    rows: dict[str, list[str]] = {}
    for line in lines[1:]:
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) >= 2 and cells[1] in _LOAD_STATUS:
            rows.setdefault(cells[1], []).append(cells[0])
    if not rows:
        return None
    parts = [f"{sum(map(_keys_in, keys))} weight{'s' if sum(map(_keys_in, keys)) != 1 else ''} "
             f"{_LOAD_STATUS[status]} ({_where(keys)})" for status in _LOAD_STATUS if (keys := rows.get(status))]
    return f"model: {head['cls']} from {head['source'].strip()}: " + "; ".join(parts)


class _OneLineLoadReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        line = load_report_line(record.getMessage())
        if line is not None:
            record.msg, record.args = line, ()
        return True


_LOAD_REPORT_FILTER = _OneLineLoadReport()


def quiet_known_noise() -> None:
    """Install the narrow filters above (calling it again adds nothing). Each command module calls it before its
    first import of transformers (which imports torchao), and `cli.launch` before Hydra starts; importing the
    package itself installs nothing."""
    for name, import_filter in _IMPORT_FILTERS.items():
        logging.getLogger(name).addFilter(import_filter)
    for message, category, module in KNOWN_HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_LIGHTNING_FILTER)
    logging.getLogger("lightning_fabric.utilities.seed").addFilter(_SEED_FILTER)
    logging.getLogger("transformers.modeling_utils").addFilter(_LOAD_REPORT_FILTER)


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


def early_stop_line(trainer: Any) -> str | None:
    """One line when early stopping ended fit before `max_epochs`/`max_steps` (Lightning says so only at debug level,
    so a run asked for 25 epochs that stopped at 11 looked finished): which metric, the patience, the epoch, and how
    to turn it off. None when it did not stop the run."""
    from pytorch_lightning.callbacks import EarlyStopping

    for callback in getattr(trainer, "callbacks", []):
        if not isinstance(callback, EarlyStopping) or getattr(callback, "stopping_reason_message", None) is None:
            continue
        reason = str(getattr(callback.stopping_reason, "name", callback.stopping_reason)).lower().replace("_", " ")
        return (f"early stopping ended training at epoch {callback.stopped_epoch} (step {trainer.global_step}) of "
                f"max_epochs {trainer.max_epochs}/max_steps {trainer.max_steps}: {callback.monitor} "
                f"({callback.mode}), {reason}, patience {callback.patience}; turn it off with "
                f"callbacks.early_stopping=null or raise callbacks.early_stopping.patience")
    return None


# What Hydra and the config printout write into a run directory before any work: a directory holding only these,
# all written by this process, holds nothing of value.
_HYDRA_FILES = frozenset({"config.yaml", "hydra.yaml", "overrides.yaml"})


def discard_run_dir(run_dir: str | os.PathLike[str] | None, task_name: str | None) -> bool:
    """Remove a run directory that only holds what this process wrote before failing (`.hydra/`,
    `config_tree.log`, `<task_name>.log`), and the parents inside the current directory (`runs/`, `<task_name>/`,
    `outputs/`) it leaves empty that this process created. Anything else inside (checkpoints, results, a file of the user's) or anything older than this
    process keeps the whole directory. Returns whether it was removed."""
    import shutil

    if not run_dir:
        return False
    run = Path(run_dir)
    ours = {".hydra", "config_tree.log", f"{task_name}.log"}
    try:
        entries = list(run.iterdir())
        hydra = list((run / ".hydra").iterdir()) if (run / ".hydra").is_dir() else []
        if any(entry.name not in ours for entry in entries) or any(f.name not in _HYDRA_FILES for f in hydra):
            return False
        if any(path.stat().st_mtime < _STARTED for path in [run, *entries, *hydra]):
            return False
        cwd = Path.cwd().absolute()
        new_parents = [p for p in list(run.absolute().parents)[:3]
                       if cwd in p.parents and p.stat().st_mtime >= _STARTED]
        shutil.rmtree(run)
    except OSError:
        return False
    for parent in new_parents:
        try:
            parent.rmdir()  # only when empty
        except OSError:
            break
    return True
