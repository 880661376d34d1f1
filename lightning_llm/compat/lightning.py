"""Private APIs of Lightning, torch and transformers we depend on (see lightning_llm/compat/__init__.py)."""

from __future__ import annotations

import csv
import typing
from collections.abc import Callable, Collection
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.connector import _PRECISION_INPUT
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from torch import nn
from torch.distributed.fsdp.wrap import CustomPolicy


# ------------------------------------------------------------------------------------------------- Lightning
def logs_this_step(trainer: pl.Trainer) -> bool:
    """Whether Lightning writes this training step's metrics to the loggers (every `trainer.log_every_n_steps`
    optimizer steps, and when the run stops). Wraps `trainer._logger_connector.should_update_logs`: Lightning
    exposes `log_every_n_steps` but not its own decision, which also counts `_batches_that_stepped` (not
    `global_step`) and `should_stop`; recomputing it here would drift from what is written."""
    return bool(getattr(trainer._logger_connector, "should_update_logs", True))


def attached_trainer(module: pl.LightningModule) -> pl.Trainer | None:
    """The trainer a module is attached to, or None: `module.trainer` raises when there is none."""
    return module._trainer


def batches_that_stepped(trainer: pl.Trainer) -> int:
    """The step number Lightning passes to the loggers with `train/*` metrics. Wraps
    `trainer.fit_loop.epoch_loop._batches_that_stepped` (what Lightning's own `LearningRateMonitor` uses):
    `trainer.global_step` counts optimizer steps of every optimizer, so metrics logged with it would sit at other
    x positions than `train/loss` as soon as there is more than one optimizer or manual optimization."""
    return int(trainer.fit_loop.epoch_loop._batches_that_stepped)


def restore_pending_loader_state(trainer: pl.Trainer) -> bool:
    """On resume, load the `StatefulDataLoader` position the checkpoint holds if Lightning left it pending, and
    recreate the data iterator from it; True when it did. Workaround for Lightning issue #20550 (open in 2.6.6):
    when `configure_optimizers` reads `trainer.estimated_stepping_batches` the loaders are built before the
    checkpoint is restored, and the saved position in `fit_loop._combined_loader_states_to_load` is never
    applied, so the resumed run starts the epoch over. Uses `fit_loop._load_combined_loader_states()` and
    `fit_loop._data_fetcher`, as the proposed fix (Lightning PR #21765) does; no public API reaches the pending
    state. A no-op (False) once Lightning loads it itself. Call it from `on_train_start`."""
    fit_loop = trainer.fit_loop
    if not (fit_loop.restarting and getattr(fit_loop, "_combined_loader_states_to_load", None)
            and getattr(fit_loop, "_data_fetcher", None) is not None):
        return False
    fit_loop._load_combined_loader_states()
    iter(fit_loop._data_fetcher)
    return True


class _CarryingLauncher(_MultiProcessingLauncher):
    """Lightning's spawn launcher, also sending the attributes named in `carried` of rank 0's LightningModule back
    to the main process (through `get_extra_results` / `update_main_process_results`, the hooks its docstring
    says to override for extra results)."""

    carried: tuple[str, ...] = ()

    def get_extra_results(self, trainer: pl.Trainer) -> dict[str, Any]:
        extra = super().get_extra_results(trainer)
        extra["lightning_llm_module_attributes"] = {n: getattr(trainer.lightning_module, n) for n in self.carried}
        return extra

    def update_main_process_results(self, trainer: pl.Trainer, extra: dict[str, Any]) -> None:
        super().update_main_process_results(trainer, extra)
        for name, value in extra.get("lightning_llm_module_attributes", {}).items():
            setattr(trainer.lightning_module, name, value)


def carry_from_spawned_workers(trainer: pl.Trainer, attributes: tuple[str, ...]) -> bool:
    """Under `ddp_spawn` (hardware=ddp_sim) the fit/test loops run in worker processes and only the callback
    metrics (and, after fit, the weights) come back: make the module `attributes` of rank 0 (picklable values)
    come back too; True when the trainer spawns. Swaps the class of `trainer.strategy._launcher` (a private
    attribute holding Lightning's private `_MultiProcessingLauncher`) for a subclass; no public API adds results."""
    launcher = getattr(trainer.strategy, "_launcher", None)
    if not isinstance(launcher, _MultiProcessingLauncher):
        return False
    launcher.__class__ = _CarryingLauncher
    launcher.carried = tuple(attributes)
    return True


def _flatten_literals(tp: Any) -> tuple[Any, ...]:
    args = typing.get_args(tp)
    return tuple(a for arg in args for a in (_flatten_literals(arg) if typing.get_args(arg) else (arg,)))


def precision_inputs() -> tuple[Any, ...]:
    """Every value `pl.Trainer(precision=...)` accepts (`"32-true"`, `"bf16-mixed"`, 16, ...), so a bad
    `hardware.precision` fails before any work with the valid names listed. Wraps
    `lightning_fabric.connector._PRECISION_INPUT`, the Literal type Lightning validates against; Lightning has
    no public list of the names."""
    return _flatten_literals(_PRECISION_INPUT)


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv, and a copy of the writer made before the file existed
    (ddp_spawn phases, resumed runs) rewrites it with only the columns it knows, which crashes. This one keeps the
    file and adopts its columns, so a resumed run or a spawned test phase continues the same metrics.csv.
    Overrides `ExperimentWriter._check_log_dir_exists` (which deletes the file) and reads through its `_fs`
    (the log directory's fsspec filesystem): the writer has no option to keep the file."""

    def _check_log_dir_exists(self) -> None:
        pass

    def save(self) -> None:
        if self.metrics and self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                header = next(csv.reader(file), [])
            self.metrics_keys = sorted(set(self.metrics_keys) | set(header))
        super().save()


class AppendingCSVLogger(CSVLogger):
    """`CSVLogger` that appends to the run's metrics.csv instead of replacing it (see `_AppendingWriter`).
    Replaces `CSVLogger.experiment`, which creates its writer into `_experiment` (after making the root directory
    with `_fs`): Lightning offers no way to choose the writer class. Configs name it as
    `lightning_llm.tracking.loggers.AppendingCSVLogger`."""

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def tensorboard_file_writer(logger: Any) -> Any:
    """The event-file writer of a `TensorBoardLogger`'s `SummaryWriter`, to add raw summaries (an HParams
    session) to it. Wraps `SummaryWriter._get_file_writer()`, what `TensorBoardLogger.log_hyperparams` itself
    uses: the public `file_writer` attribute is None once Lightning closed the writer at the end of fit/test,
    while `_get_file_writer()` reopens it, and `SummaryWriter.add_hparams` would write a second run directory."""
    return logger.experiment._get_file_writer()


# ------------------------------------------------------------------------------------------------------- torch
class RootAwareWrapPolicy(CustomPolicy):
    """FSDP auto-wrap policy that wraps exactly the modules `modules_to_wrap(root)` returns for the root module
    FSDP wraps. Overrides `CustomPolicy._run_policy` (FSDP's entry point to a policy) and sets its `_lambda_fn`:
    the public `CustomPolicy(lambda_fn)` sees one module at a time, and the blocks to wrap (transformer layers
    that share no weight with modules outside them) can only be decided from the whole model, which is built
    after the policy (the strategy is created with the Trainer)."""

    def __init__(self, modules_to_wrap: Callable[[nn.Module], Collection[nn.Module]]) -> None:
        super().__init__(lambda module: False)
        self.modules_to_wrap = modules_to_wrap

    def _run_policy(self, root_module: nn.Module, ignored_modules: set[nn.Module],
                    root_kwargs: dict[str, Any]) -> dict[nn.Module, dict[str, Any]]:
        wrap = set(self.modules_to_wrap(root_module))
        self._lambda_fn = lambda module: module in wrap
        return super()._run_policy(root_module, ignored_modules, root_kwargs)


# ----------------------------------------------------------------------------------------------- transformers
def no_split_module_names(model: Any) -> set[str]:
    """Class names of the blocks a Hugging Face model says must not be split across devices or shards
    (`GPT2Block`, `BertLayer`, ...); empty when it names none. Wraps `PreTrainedModel._no_split_modules`, the
    class attribute transformers' own `device_map` and FSDP integrations read; there is no public accessor."""
    return set(getattr(model, "_no_split_modules", None) or ())
