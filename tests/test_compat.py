"""Each wrapper of lightning_llm/compat.py against the installed Lightning, Hydra, torch and transformers: when an
upgrade changes a private API these use, the test of that wrapper fails (instead of a run, later)."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from hydra.core.utils import JobReturn, JobStatus
from pytorch_lightning.loggers import Logger, TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_llm import compat

N_BATCHES = 8


class Recorder(Logger):
    """A logger that keeps what Lightning writes: (step, metrics) pairs."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "recorder"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.rows.append((int(step or 0), dict(metrics)))


class Tiny(pl.LightningModule):
    """One linear layer over batches of one index each; records what each training step saw."""

    def __init__(self, log_only_when_written: bool = False) -> None:
        super().__init__()
        self.layer = nn.Linear(1, 1)
        self.log_only_when_written = log_only_when_written
        self.seen: list[int] = []
        self.logs_this_step: list[bool] = []

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.seen.append(int(batch[0][0]))
        self.logs_this_step.append(compat.logs_this_step(self.trainer))
        loss = self.layer(batch[0].float().unsqueeze(-1)).pow(2).mean()
        if not self.log_only_when_written or self.logs_this_step[-1]:
            self.log("train/loss", loss, on_step=True, on_epoch=False)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        self.trainer.estimated_stepping_batches  # what our modules' schedulers read (Lightning #20550)
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _loader(stateful: bool = False) -> DataLoader:
    data = TensorDataset(torch.arange(N_BATCHES))
    if stateful:
        from torchdata.stateful_dataloader import StatefulDataLoader

        return StatefulDataLoader(data, batch_size=1)
    return DataLoader(data, batch_size=1)


def _trainer(tmp_path: Path, **kwargs: Any) -> pl.Trainer:
    defaults = {"accelerator": "cpu", "devices": 1, "max_epochs": 1, "logger": False,
                "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False,
                "default_root_dir": str(tmp_path)}
    return pl.Trainer(**{**defaults, **kwargs})


@pytest.fixture(autouse=True)
def _quiet() -> None:
    warnings.filterwarnings("ignore", message=".*(does not have many workers|num_workers|NO_SHARD|"
                                              "LeafSpec|smaller than the logging interval).*")


# ------------------------------------------------------------------------------------------------- Lightning
def test_logs_this_step_is_when_lightning_writes_train_metrics(tmp_path: Path) -> None:
    written: dict[bool, list[int]] = {}
    for only_when_written in (False, True):
        model, recorder = Tiny(log_only_when_written=only_when_written), Recorder()
        _trainer(tmp_path, logger=recorder, log_every_n_steps=3).fit(model, _loader())
        written[only_when_written] = [step for step, metrics in recorder.rows if "train/loss" in metrics]
    assert model.logs_this_step == [step % 3 == 2 for step in range(N_BATCHES)]
    assert written[True] == written[False] == [2, 5]  # logging only then loses nothing Lightning would write


def test_batches_that_stepped_is_the_step_loggers_get(tmp_path: Path) -> None:
    recorder, seen = Recorder(), []

    class Probe(pl.Callback):
        def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
            seen.append(compat.batches_that_stepped(trainer))

    trainer = _trainer(tmp_path, logger=recorder, log_every_n_steps=1, accumulate_grad_batches=2,
                       callbacks=[Probe()])
    trainer.fit(Tiny(), _loader())
    # At the end of a batch that stepped the optimizer (every 2nd): the step its `train/loss` is written at.
    assert seen == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [step for step, metrics in recorder.rows if "train/loss" in metrics] == seen[1::2] == [0, 1, 2, 3]
    assert compat.batches_that_stepped(trainer) == trainer.global_step == 4


def test_restore_pending_loader_state_resumes_mid_epoch(tmp_path: Path) -> None:
    ckpt = tmp_path / "mid.ckpt"

    class SaveAtStep3(pl.Callback):  # as ModelCheckpoint(every_n_train_steps=3) saves: inside the epoch
        def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
            if trainer.global_step == 3:
                trainer.save_checkpoint(ckpt)

    _trainer(tmp_path, max_steps=4, callbacks=[SaveAtStep3()]).fit(Tiny(), _loader(stateful=True))
    restored: list[bool] = []

    class Restore(pl.Callback):
        def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            restored.append(compat.restore_pending_loader_state(trainer))

    resumed = Tiny()
    _trainer(tmp_path, callbacks=[Restore()]).fit(resumed, _loader(stateful=True), ckpt_path=ckpt)
    assert resumed.seen == list(range(3, N_BATCHES))  # the next batch, not the epoch over
    assert restored == [True]  # still needed with this Lightning: it left the loader position pending
    fresh: list[bool] = []

    class NothingPending(pl.Callback):
        def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            fresh.append(compat.restore_pending_loader_state(trainer))

    _trainer(tmp_path, max_steps=1, callbacks=[NothingPending()]).fit(Tiny(), _loader(stateful=True))
    assert fresh == [False]


def test_precision_inputs_are_what_the_trainer_accepts() -> None:
    names = compat.precision_inputs()
    assert {"32-true", "bf16-mixed", "16-mixed", "64-true", "transformer-engine"} <= set(names)
    assert pl.Trainer(accelerator="cpu", precision="bf16-mixed", logger=False).precision == "bf16-mixed"
    assert "bf16-fast" not in names
    with pytest.raises(ValueError, match="Precision"):
        pl.Trainer(accelerator="cpu", precision="bf16-fast", logger=False)


def test_appending_csv_logger_continues_the_same_metrics_file(tmp_path: Path) -> None:
    for step, row in enumerate(({"train/loss": 1.0}, {"train/loss": 0.5, "val/acc": 0.75})):
        logger = compat.AppendingCSVLogger(save_dir=str(tmp_path), name="csv", version=0)
        logger.log_metrics(row, step=step)
        logger.save()
        assert isinstance(logger.experiment, compat._AppendingWriter)
    with open(tmp_path / "csv" / "version_0" / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(r["step"], r["train/loss"], r["val/acc"]) for r in rows] == [("0", "1.0", ""), ("1", "0.5", "0.75")]


def test_tensorboard_file_writer_reopens_after_lightning_closed_it(tmp_path: Path) -> None:
    from torch.utils.tensorboard.summary import hparams

    logger = TensorBoardLogger(save_dir=str(tmp_path), name="tb", version=0)
    logger.log_metrics({"val/acc": 0.5}, step=1)
    logger.finalize("success")  # what Trainer does at the end of fit/test: closes the SummaryWriter
    writer = compat.tensorboard_file_writer(logger)
    for summary in hparams({"lr": 0.1}, {"val/acc": 0.5}):
        writer.add_summary(summary)
    writer.flush()
    events = list((tmp_path / "tb" / "version_0").glob("events.out.tfevents.*"))
    assert events and sum(p.stat().st_size for p in events) > 0
    assert not [p for p in (tmp_path / "tb" / "version_0").iterdir() if p.is_dir()]  # no second run directory


# ------------------------------------------------------------------------------------------------------ torch
def test_root_aware_wrap_policy_wraps_what_it_computes_from_the_root() -> None:
    import torch.distributed as dist
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Linear(4, 4), nn.ReLU()), nn.Linear(4, 2))
    block, roots = model[1], []

    def blocks(root: nn.Module) -> list[nn.Module]:  # decided from the whole model, as transformer_blocks
        roots.append(root)
        return [root[1]]

    dist.init_process_group("gloo", rank=0, world_size=1, store=dist.HashStore())
    try:
        wrapped = FSDP(model, auto_wrap_policy=compat.RootAwareWrapPolicy(blocks), device_id=torch.device("cpu"))
        units = [m for m in wrapped.modules() if isinstance(m, FSDP)]
        assert roots == [model]
        assert len(units) == 2 and units[1].module is block  # the root's unit, and the one block's
        assert wrapped(torch.randn(2, 4)).shape == (2, 2)
    finally:
        dist.destroy_process_group()


# ----------------------------------------------------------------------------------------------- transformers
def test_no_split_module_names_are_the_models_blocks() -> None:
    from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

    gpt = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=20, n_positions=16))
    bert = BertModel(BertConfig(num_hidden_layers=1, hidden_size=8, num_attention_heads=2, intermediate_size=16,
                                vocab_size=20))
    assert compat.no_split_module_names(gpt) == {"GPT2Block"}
    assert "BertLayer" in compat.no_split_module_names(bert)
    assert compat.no_split_module_names(nn.Linear(1, 1)) == set()


# ------------------------------------------------------------------------------------------------------ Hydra
def test_failed_job_error_is_the_jobs_exception_without_printing(capsys: pytest.CaptureFixture[str]) -> None:
    error = RuntimeError("boom")
    ret = JobReturn(overrides=["x=1"])
    ret.return_value, ret.status = error, JobStatus.FAILED  # how hydra.core.utils.run_job records a failure
    assert compat.failed_job_error(ret) is error
    assert capsys.readouterr().err == ""
    with pytest.raises(RuntimeError):
        ret.return_value  # the public accessor re-raises (and prints), which a sweeper must not do
    done = JobReturn()
    done.return_value, done.status = 0.5, JobStatus.COMPLETED
    assert compat.failed_job_error(done) is None


def test_carry_from_spawned_workers_sends_module_attributes_back() -> None:
    """What the spawn launcher does with a worker's results, step by step: the worker's launcher (pickled to it)
    collects, the extra results are pickled back, the main process's launcher restores them on its module."""
    import pickle

    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False)
    assert compat.carry_from_spawned_workers(trainer, ("stage_details",))
    launcher = trainer.strategy._launcher
    worker, main = nn.Module(), nn.Module()
    worker.stage_details, main.stage_details = {"test": {"examples": 3}}, {}
    trainer.strategy._lightning_module = worker
    extra = pickle.loads(pickle.dumps(launcher)).get_extra_results(trainer)
    trainer.strategy._lightning_module = main
    launcher.update_main_process_results(trainer, pickle.loads(pickle.dumps(extra)))
    assert main.stage_details == {"test": {"examples": 3}}
    assert not compat.carry_from_spawned_workers(pl.Trainer(accelerator="cpu", devices=1, logger=False), ("x",))


# ------------------------------------------------------------------------------------------------------ Optuna
def test_reopened_trial_reports_to_the_trial_another_process_asked_for(tmp_path: Path) -> None:
    import optuna

    storage = f"sqlite:///{tmp_path}/s.db"
    asked = optuna.create_study(study_name="s", storage=storage).ask()
    elsewhere = optuna.load_study(study_name="s", storage=storage)
    reopened = compat.reopen_trial(elsewhere, compat.trial_id(asked))
    assert reopened.number == asked.number
    reopened.report(0.25, step=3)
    assert optuna.load_study(study_name="s", storage=storage).trials[0].intermediate_values == {3: 0.25}
    assert compat.trial_id(elsewhere.trials[0]) == compat.trial_id(asked)


def test_attached_trainer_is_none_until_a_trainer_holds_the_module(tmp_path: Path) -> None:
    module = pl.LightningModule()
    assert compat.attached_trainer(module) is None
    trainer = pl.Trainer(accelerator="cpu", logger=False, default_root_dir=tmp_path)
    trainer.strategy.connect(module)
    module.trainer = trainer
    assert compat.attached_trainer(module) is trainer
