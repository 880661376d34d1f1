"""Sweeps: our Optuna sweeper (search space, persistent study that grows when re-run, best params written) and
fault tolerance (a crashing job is recorded, the others finish, non-zero exit with a one-line summary)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from hydra_plugins.lightning_llm_optuna.search_space import (
    override_value,
    parse_search_space,
)
from hydra_plugins.lightning_llm_optuna.sweeper import OptunaSweeper, resolve_direction
from lightning_llm import compat
from lightning_llm.errors import error_line
from lightning_llm.report import write_report
from lightning_llm.tracking.jobs import swept_overrides
from tests.conftest import TINY_BERT

# A few batches per job: the sweep machinery is under test, not the model.
TINY_JOB = [*TINY_BERT, "trainer.max_epochs=1", "++trainer.limit_train_batches=2", "++trainer.limit_val_batches=1",
            "++trainer.limit_test_batches=1", "data.max_length=32"]


def test_search_space_follows_hydra_sweep_syntax() -> None:
    space, fixed = parse_search_space([
        "model.learning_rate=tag(log, interval(1e-5, 1e-2))", "model.dropout=interval(0, 0.3)",
        "data.batch_size=choice(16, 32)", "+trainer.limit_train_batches=range(2, 11, 4)", "seed=1,2",
        "model.weight_decay=interval(0, 1)", "model.weight_decay=0.01", "task_name=x"])
    assert space["model.learning_rate"] == FloatDistribution(1e-5, 1e-2, log=True)
    assert space["model.dropout"] == FloatDistribution(0.0, 0.3)
    assert space["data.batch_size"] == CategoricalDistribution([16, 32])
    assert space["+trainer.limit_train_batches"] == IntDistribution(2, 10, step=4)  # range's stop is excluded
    assert space["seed"] == CategoricalDistribution([1, 2])
    assert "model.weight_decay" not in space  # the later plain value wins, as in Hydra
    assert fixed == ["model.weight_decay=0.01", "task_name=x"]
    assert [override_value(v) for v in (None, True, 0.5, "a b", "x/y")] == ["null", "true", "0.5", "'a b'", "x/y"]


def test_direction_auto_minimizes_losses_and_perplexity() -> None:
    assert resolve_direction("auto", "val/acc_best") == "maximize"
    assert resolve_direction("auto", "val/ppl") == resolve_direction("auto", "val/loss") == "minimize"
    assert resolve_direction("max", "val/loss") == "maximize"
    with pytest.raises(ValueError, match="direction"):
        resolve_direction("up", "val/acc")


def test_swept_overrides_leave_out_what_the_whole_sweep_fixed() -> None:
    sweep_level = ["experiment=classify_demo", "model.learning_rate=1e-4,1e-3", "hydra.sweeper.n_trials=4"]
    job = ["experiment=classify_demo", "model.learning_rate=1e-4", "data.batch_size=16"]
    assert swept_overrides(job, sweep_level) == ["model.learning_rate=1e-4", "data.batch_size=16"]


def test_error_line_is_one_line_and_finds_our_message_behind_hydra() -> None:
    from hydra.errors import InstantiationException

    from lightning_llm.errors import UserError

    try:
        try:
            raise UserError("model.num_attention_heads: must divide\nhidden_size")
        except UserError as inner:
            raise InstantiationException("Error in call to target 'X'") from inner
    except InstantiationException as err:
        assert error_line(err) == "model.num_attention_heads: must divide hidden_size"
    assert error_line(ValueError("bad\nvalue")) == "ValueError: bad value"


class FakeLauncher:
    """Stands in for Hydra's launcher: a job's value is a function of its overrides, no training."""

    def __init__(self, objective, root: Path) -> None:
        self.objective, self.root, self.launched = objective, root, []

    def launch(self, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        returns = []
        for i, overrides in enumerate(job_overrides):
            params = dict(o.split("=", 1) for o in overrides)
            self.launched.append(params)
            job_dir = self.root / str(initial_job_idx + i)
            hydra_cfg = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(job_dir)}}})
            returns.append(JobReturn(hydra_cfg=hydra_cfg, status=JobStatus.COMPLETED,
                                     _return_value=self.objective(params)))
        return returns


def run_fake_sweep(tmp_path: Path, params: dict[str, str], n_trials: int, objective, sampler: str,
                   storage: str) -> FakeLauncher:
    sweeper = OptunaSweeper(metric="val/acc", direction="auto", study_name="s", storage=storage, n_trials=n_trials,
                            n_jobs=1, sampler=OmegaConf.create({"_target_": sampler, "seed": 0}),
                            params=OmegaConf.create(params))
    sweep_dir = tmp_path / f"sweep{len(list(tmp_path.glob('sweep*')))}"
    sweeper.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}})
    sweeper.launcher = FakeLauncher(objective, tmp_path)
    sweeper.sweep([])
    return sweeper.launcher


def test_resumed_seeded_study_proposes_new_points(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/study.db"
    runs = [run_fake_sweep(tmp_path, {"x": "interval(0, 1)"}, 2, lambda p: float(p["x"]),
                           "optuna.samplers.RandomSampler", storage) for _ in range(2)]
    xs = [p["x"] for run in runs for p in run.launched]
    assert len(xs) == 4 and len(set(xs)) == 4  # the same seed restarted would replay the first two
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 4


def test_repeated_proposals_reuse_values_and_failures_are_recorded(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/study.db"
    launcher = run_fake_sweep(tmp_path, {"x": "choice(1, 2)"}, 4, lambda p: None if p["x"] == "2" else 1.0,
                              "optuna.samplers.TPESampler", storage)
    study = optuna.load_study(study_name="s", storage=storage)
    assert len(study.trials) == 4
    assert len(launcher.launched) == len({p["x"] for p in launcher.launched})  # no point trained twice
    states = {t.params["x"]: t for t in study.trials if "copied_from" not in t.user_attrs}
    assert states[1].state == optuna.trial.TrialState.COMPLETE and states[1].value == 1.0
    assert states[2].state == optuna.trial.TrialState.FAIL  # x=2 "crashed" (returned None)
    assert "returned None" in states[2].user_attrs["error"]


def test_trial_left_running_by_a_killed_sweep_is_run_again(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/study.db"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    killed = study.ask({"x": FloatDistribution(0, 1)})  # the sweep died while this trial trained
    live = study.ask({"x": FloatDistribution(0, 1)})  # another sweep is training this one right now
    rdb = optuna.storages.RDBStorage(storage, heartbeat_interval=30)
    for trial in (killed, live):
        rdb.record_heartbeat(compat.trial_id(trial))
    with sqlite3.connect(tmp_path / "study.db") as db:  # the killed sweep's last heartbeat was 10 minutes ago
        db.execute("UPDATE trial_heartbeats SET heartbeat = datetime('now', '-600 seconds') WHERE trial_id = ?",
                   (compat.trial_id(killed),))
    launcher = run_fake_sweep(tmp_path, {"x": "interval(0, 1)"}, 1, lambda p: 0.5,
                              "optuna.samplers.RandomSampler", storage)
    assert float(launcher.launched[0]["x"]) == pytest.approx(killed.params["x"])
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert [t.state.name for t in trials] == ["FAIL", "RUNNING", "COMPLETE"]
    assert trials[2].user_attrs["retry_of"] == killed.number


def tensorboard_hparams(log_dir: Path) -> tuple[dict[str, Any], set[str]]:
    """The hparams of a TensorBoard run's HParams session and the metric tags its dashboard shows."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(log_dir))
    events.Reload()
    hparams, metrics = {}, set()
    for raw in events.PluginTagToContent("hparams").values():
        data = plugin_data_pb2.HParamsPluginData.FromString(raw)
        if data.WhichOneof("data") == "experiment":
            metrics = {info.name.tag for info in data.experiment.metric_infos}
        elif data.WhichOneof("data") == "session_start_info":
            hparams = {k: getattr(v, v.WhichOneof("kind")) for k, v in data.session_start_info.hparams.items()}
    return hparams, metrics


def _sweep_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob("outputs/*/multiruns/*/multirun.yaml"))


@pytest.mark.slow  # a CLI end-to-end run (~15-45 s on 2 cores)
def test_optuna_search_writes_best_params_and_resumes_the_study(run_cli, tmp_path: Path) -> None:
    first = run_cli("lightning_llm.train", "hparams_search=optuna", *TINY_JOB, "hydra.sweeper.n_trials=2")
    assert first.returncode == 0, first.stderr[-3000:]
    (sweep_dir,) = _sweep_dirs(tmp_path)
    best = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert best.n_trials_in_study == 2 and isinstance(best.best_value, float)
    assert set(best.best_params) == {"model.learning_rate", "data.batch_size", "model.warmup_ratio",
                                     "model.weight_decay", "model.dropout"}
    assert "optuna: best of 2 trials" in first.stdout
    for job in ("0", "1"):  # every trial is a job with its own results, trained with the sampled values
        results = json.loads((sweep_dir / job / "results.json").read_text())
        assert results["status"] == "completed"
        trial = best.trials[int(job)]
        job_cfg = OmegaConf.load(sweep_dir / job / ".hydra" / "config.yaml")
        assert job_cfg.model.learning_rate == pytest.approx(trial.params["model.learning_rate"])
        assert results["optimized_metric"]["value"] == pytest.approx(trial.value)

    second = run_cli("lightning_llm.train", "hparams_search=optuna", *TINY_JOB, "hydra.sweeper.n_trials=1")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "2 trials so far, 1 to add" in second.stdout
    study = optuna.load_study(study_name="classification", storage=f"sqlite:///{tmp_path}/outputs/classification/optuna.db")
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert study.trials[2].params not in (study.trials[0].params, study.trials[1].params)
    new_sweep = next(d for d in _sweep_dirs(tmp_path) if d != sweep_dir)
    assert OmegaConf.load(new_sweep / "optimization_results.yaml").n_trials_in_study == 3


@pytest.mark.slow  # a CLI end-to-end run (~15-45 s on 2 cores)
def test_sweep_survives_a_crashing_job(run_cli, tmp_path: Path) -> None:
    # 3 heads do not divide hidden_size=32: job 2 fails while building the model.
    proc = run_cli("lightning_llm.train", "-m", *TINY_JOB, "model.num_attention_heads=1,2,3",
                   "logger=[csv,tensorboard]")
    assert proc.returncode == 1
    summary = [line for line in proc.stderr.splitlines() if line.startswith("sweep:")]
    assert len(summary) == 1 and summary[0].startswith("sweep: 1 of 3 jobs failed (job 2, failed:")
    (sweep_dir,) = _sweep_dirs(tmp_path)
    assert sweep_dir.parent.parent.name == "classification"  # outputs/<task_name>/multiruns/<timestamp>/<job>
    statuses = {job: json.loads((sweep_dir / job / "results.json").read_text()) for job in ("0", "1", "2")}
    assert statuses["0"]["status"] == statuses["1"]["status"] == "completed"
    assert statuses["2"]["status"] == "failed"
    assert "hidden size (32) is not a multiple" in statuses["2"]["error"]
    assert "job failed:" in (sweep_dir / "2" / "classification.log").read_text()  # the job's own log says why

    for job, heads in (("0", 1), ("1", 2)):  # TensorBoard's HParams dashboard can compare the jobs
        hparams, metrics = tensorboard_hparams(sweep_dir / job / "tensorboard")
        assert hparams["model/num_attention_heads"] == heads
        assert {"val/acc_best", "test/acc"} <= metrics

    report = write_report(sweep_dir)  # the report reads a real sweep too, failed job included
    rows = (report.parent / "report.csv").read_text().splitlines()
    assert rows[0].startswith("job,status,model.num_attention_heads,val/acc_best")
    assert rows[-1].startswith("2,failed,3,,")
    assert (report.parent / "learning_curves.png").is_file()
