"""Sweeps at scale: Optuna pruning (jobs report to their trial, pruned trials are outcomes, not failures),
several sweeps on one sqlite study at once, trials run in parallel (joblib) and through submitit's local
executor (the SLURM launcher's code path)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.trial import TrialState

from hydra_plugins.lightning_llm_optuna.sweeper import OptunaSweeper
from lightning_llm.tracking.trials import PRUNED_AT, TRIAL_ENV, TrialLink, build_pruner
from tests.conftest import TINY_BERT
from tests.test_sweeps import FakeLauncher

TINY_JOB = [*TINY_BERT, "++trainer.limit_val_batches=2", "++trainer.limit_test_batches=1", "data.max_length=32",
            "logger=csv"]


def job_env(overrides: list[str]) -> dict[str, str]:
    """What `hydra.job.env_set` overrides would put into the job's environment."""
    env = {}
    for override in OverridesParser.create().parse_overrides([o for o in overrides if "env_set." in o]):
        env[override.get_key_element().rsplit(".", 1)[1]] = str(override.value())
    return env


class ReportingLauncher:
    """Jobs without training: each reports `curve(x)` at steps 1..3 to its trial, as OptunaPruning does, and stops
    when the pruner says so."""

    def __init__(self, root: Path) -> None:
        self.root, self.steps = root, []

    def launch(self, job_overrides: list[list[str]], initial_job_idx: int) -> list[JobReturn]:
        returns = []
        for i, overrides in enumerate(job_overrides):
            x = float(dict(o.split("=", 1) for o in overrides)["x"])
            trial = TrialLink(**json.loads(job_env(overrides)[TRIAL_ENV])).open()
            for step in (1, 2, 3):
                trial.report(x * step, step)
                if trial.should_prune():
                    trial.set_user_attr(PRUNED_AT, step)
                    break
            self.steps.append(step)
            hydra_cfg = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(self.root / str(i))}}})
            returns.append(JobReturn(hydra_cfg=hydra_cfg, status=JobStatus.COMPLETED, _return_value=x * step))
        return returns


def make_sweeper(tmp_path: Path, storage: str | None, **kwargs) -> OptunaSweeper:
    options = {"pruner": None, "n_trials": 4, "n_jobs": 1, "params": {"x": "choice(1.0, 0.9, 0.1, 0.2)"},
               "sampler": {"_target_": "optuna.samplers.RandomSampler", "seed": 0}, **kwargs}
    sweeper = OptunaSweeper(metric="val/acc", direction="maximize", study_name="s", storage=storage,
                            n_trials=options["n_trials"], n_jobs=options["n_jobs"],
                            sampler=OmegaConf.create(options["sampler"]), params=OmegaConf.create(options["params"]),
                            pruner=options["pruner"], pruner_options=OmegaConf.create(options.get("pruner_options")),
                            split_resources=options.get("split_resources"))
    sweeper.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "sweep")},
                                                 "launcher": {"_target_": options.get("launcher", "basic")}}})
    return sweeper


def test_pruned_trials_are_recorded_pruned_not_failed(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/study.db"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    for x in (1.0, 0.9, 0.1, 0.2):  # two good trials first, then two clearly worse ones
        study.enqueue_trial({"x": x})
    sweeper = make_sweeper(tmp_path, storage, pruner="median", pruner_options={"n_startup_trials": 2})
    sweeper.launcher = ReportingLauncher(tmp_path)
    sweeper.sweep([])
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 + [TrialState.PRUNED] * 2
    assert sweeper.launcher.steps == [3, 3, 1, 1]  # the bad ones stopped at their first report
    assert trials[2].intermediate_values == {1: 0.1}
    summary = OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml")
    assert (summary.n_complete, summary.n_pruned, summary.n_fail) == (2, 2, 0)
    assert summary.best_value == 3.0 and summary.pruner == "median"


def test_pruner_names_and_options_are_checked_before_any_trial(tmp_path: Path) -> None:
    assert isinstance(build_pruner("hyperband", {"min_resource": 2, "n_startup_trials": None}),
                      optuna.pruners.HyperbandPruner)
    assert isinstance(build_pruner(None), optuna.pruners.NopPruner)
    with pytest.raises(ValueError, match=r"hydra.sweeper.pruner='asha': use one of none, median"):
        build_pruner("asha")
    with pytest.raises(ValueError, match=r"pruner_options.n_startup_trials: not an option of SuccessiveHalving"):
        build_pruner("successive_halving", {"n_startup_trials": 3})
    with pytest.raises(ValueError, match="needs hydra.sweeper.storage"):
        make_sweeper(tmp_path, None, pruner="median")


def test_concurrent_jobs_get_their_share_of_the_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hydra_plugins.lightning_llm_optuna import sweeper as module

    monkeypatch.setattr(module, "cpu_count", lambda: 8)
    monkeypatch.setattr(module, "gpu_count", lambda: 4)
    parallel = make_sweeper(tmp_path, None, n_jobs=2, launcher="hydra_plugins.hydra_joblib_launcher.JoblibLauncher")
    slots = [job_env(s) for s in parallel._slot_overrides()]
    assert slots == [{"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4", "LLM_JOB_THREADS": "4",
                      "CUDA_VISIBLE_DEVICES": "0,1"},
                     {"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4", "LLM_JOB_THREADS": "4",
                      "CUDA_VISIBLE_DEVICES": "2,3"}]
    # The basic launcher runs a batch one job after the other; SLURM gives each job its own resources.
    assert make_sweeper(tmp_path, None, n_jobs=2)._slot_overrides() == [[], []]


def run_sweep_in_thread(root: Path, storage: str, errors: list[BaseException]) -> threading.Thread:
    def sweep() -> None:
        try:
            sweeper = make_sweeper(root, storage, n_trials=6, params={"x": "interval(0, 1)"},
                                   sampler={"_target_": "optuna.samplers.RandomSampler", "seed": None})
            sweeper.launcher = FakeLauncher(lambda p: time.sleep(0.05) or float(p["x"]), root)
            sweeper.sweep([])
        except BaseException as err:  # noqa: BLE001  (re-raised by the test)
            errors.append(err)

    thread = threading.Thread(target=sweep)
    thread.start()
    return thread


def test_two_concurrent_sweeps_on_one_sqlite_study_lose_no_trials(tmp_path: Path) -> None:
    """Two sweeps (threads with their own storage connections, as two processes would have) ask and tell on one
    sqlite study at once; the second to start must not take the first one's running trials for stale."""
    storage = f"sqlite:///{tmp_path}/study.db"
    optuna.create_study(study_name="s", storage=storage, direction="maximize")
    errors: list[BaseException] = []
    threads = [run_sweep_in_thread(tmp_path / "a", storage, errors)]
    while len(optuna.load_study(study_name="s", storage=storage).trials) < 3:  # b starts while a is training
        time.sleep(0.02)
    threads.append(run_sweep_in_thread(tmp_path / "b", storage, errors))
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert len(trials) == 12 and sorted(t.number for t in trials) == list(range(12))
    assert all(t.state == TrialState.COMPLETE and t.value == pytest.approx(t.params["x"]) for t in trials)
    for name in "ab":  # each sweep's summary lists its own 6 trials
        summary = OmegaConf.load(tmp_path / name / "sweep" / "optimization_results.yaml")
        assert summary.n_complete == 6 and len({t.number for t in summary.trials}) == 6


def _sweep_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob("outputs/*/multiruns/*/multirun.yaml"))


PRUNED_SEARCH = ["hparams_search=optuna", *TINY_JOB, "trainer.max_epochs=3", "++trainer.limit_train_batches=8",
                 "data.batch_size=32", "model.warmup_ratio=0", "model.weight_decay=0", "model.dropout=0",
                 "model.learning_rate=choice(3e-3, 1e-7, 1e-6)", "hydra.sweeper.pruner=median",
                 "hydra.sweeper.pruner_options.n_startup_trials=1"]


@pytest.mark.slow  # 3 tiny trainings (~20 s)
def test_trials_that_cannot_learn_are_pruned_before_their_last_epoch(run_cli, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/outputs/classification/optuna.db"
    (tmp_path / "outputs" / "classification").mkdir(parents=True)
    study = optuna.create_study(study_name="classification", storage=storage, direction="maximize")
    for lr in (3e-3, 1e-7, 1e-6):  # one trial that learns first, then two whose learning rate is far too small
        study.enqueue_trial({"model.learning_rate": lr})
    proc = run_cli("lightning_llm.train", *PRUNED_SEARCH, "hydra.sweeper.n_trials=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sweep: 3 jobs completed (2 pruned)" in proc.stdout
    trials = optuna.load_study(study_name="classification", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.PRUNED]
    (sweep_dir,) = _sweep_dirs(tmp_path)
    results = [json.loads((sweep_dir / job / "results.json").read_text()) for job in "012"]
    assert results[0]["status"] == "completed" and results[0]["global_step"] == 24
    for pruned, trial in zip(results[1:], trials[1:]):
        assert pruned["status"] == "pruned" and pruned[PRUNED_AT] == pruned["global_step"] < 24
        assert list(trial.intermediate_values) == [pruned[PRUNED_AT]]  # reported at every validation, then stopped
        assert pruned["test"] == {} and pruned["hf_model"] is None  # no test, no export


@pytest.mark.slow  # 2 grid jobs + 2 trials, each a fresh submitit process (~80 s)
def test_submitit_local_launcher_runs_a_grid_sweep_and_an_optuna_search(run_cli, tmp_path: Path) -> None:
    """The SLURM launcher's code path (hydra-submitit-launcher, submitit pickling the job and running it in its own
    process) on this machine: results and logs land in the job dirs, a failing job is recorded, not fatal."""
    tiny = [*TINY_JOB, "hydra/launcher=submitit_local", "trainer.max_epochs=1", "++trainer.limit_train_batches=2"]
    grid = run_cli("lightning_llm.train", "-m", *tiny, "model.num_attention_heads=2,3")  # 3 does not divide 32
    assert grid.returncode == 1, grid.stderr[-3000:]
    assert "Submitit 'local' sweep output dir" in grid.stdout
    summary = [line for line in grid.stderr.splitlines() if line.startswith("sweep:")]
    assert len(summary) == 1 and summary[0].startswith("sweep: 1 of 2 jobs failed (job 1, failed:")
    (grid_dir,) = _sweep_dirs(tmp_path)
    ok, failed = (json.loads((grid_dir / job / "results.json").read_text()) for job in "01")
    assert ok["status"] == "completed" and ok["global_step"] == 2 and ok["run_dir"] == str(grid_dir / "0")
    assert failed["status"] == "failed" and "not a multiple of the number of attention heads" in failed["error"]
    assert "job failed:" in (grid_dir / "1" / "classification.log").read_text()
    assert len(list(grid_dir.glob(".submitit/*/*_log.out"))) == 2  # submitit ran each job as its own process

    search = run_cli("lightning_llm.train", "hparams_search=optuna", *tiny, "hydra.sweeper.n_trials=2")
    assert search.returncode == 0, search.stderr[-3000:]
    assert "sweep: 2 jobs completed" in search.stdout
    (search_dir,) = [d for d in _sweep_dirs(tmp_path) if d != grid_dir]
    trials = optuna.load_study(study_name="classification", storage=f"sqlite:///{tmp_path}/outputs/classification/optuna.db").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    for job, trial in zip("01", trials):
        results = json.loads((search_dir / job / "results.json").read_text())
        assert results["status"] == "completed" and results["optimized_metric"]["value"] == pytest.approx(trial.value)
        assert (search_dir / job / "classification.log").is_file()
    assert OmegaConf.load(search_dir / "optimization_results.yaml").n_complete == 2


@pytest.mark.slow  # 2 tiny trials at once (~40 s)
def test_joblib_launcher_runs_two_trials_at_once_each_with_its_thread_share(run_cli, tmp_path: Path) -> None:
    from lightning_llm.runtime.job_resources import THREADS_ENV, cpu_count

    search = run_cli("lightning_llm.train", "hparams_search=optuna", *TINY_JOB, "trainer.max_epochs=1",
                     "++trainer.limit_train_batches=2", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                     "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=2")
    assert search.returncode == 0, search.stderr[-3000:]
    threads = max(1, cpu_count() // 2)
    assert f"optuna: 2 jobs at once, {threads} CPU thread(s) each" in search.stdout
    assert "sweep: 2 jobs completed" in search.stdout
    (sweep_dir,) = _sweep_dirs(tmp_path)
    trials = optuna.load_study(study_name="classification", storage=f"sqlite:///{tmp_path}/outputs/classification/optuna.db").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    for job, trial in zip("01", trials):
        results = json.loads((sweep_dir / job / "results.json").read_text())
        assert results["run_dir"] == str(sweep_dir / job) and results["status"] == "completed"
        assert results["optimized_metric"]["value"] == pytest.approx(trial.value)
        env = OmegaConf.load(sweep_dir / job / ".hydra" / "hydra.yaml").hydra.job.env_set
        assert env[THREADS_ENV] == env.OMP_NUM_THREADS == str(threads)
