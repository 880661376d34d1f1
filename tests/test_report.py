"""`llm-report` on a sweep directory: table (markdown + CSV) ranked by the optimized metric in its direction,
failed jobs listed last with their error, PNG plots of the metric per swept parameter and learning curves, and the
optimisation history (best so far, pruned trials, Optuna's importances) of a study spread over sweep dirs."""

from __future__ import annotations

import csv
import json
import math
from itertools import accumulate
from pathlib import Path

import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.trial import TrialState

from lightning_llm.compat import reopen_trial
from lightning_llm.report import main
from lightning_llm.tracking.jobs import sweep_jobs
from lightning_llm.tracking.studies import Point, histories, importances, with_best_so_far
from lightning_llm.tracking.trials import PRUNED_AT, TRIAL_ENV, TrialLink
from tests.test_sweeps_scale import job_env, make_sweeper

PNG = b"\x89PNG"


def fake_sweep(root: Path, name: str = "2030-01-01_00-00-00_000000") -> Path:
    """A multirun directory as llm-train leaves it: 3 learning rates x fixed batch size, job 2 crashed."""
    sweep = root / "multiruns" / name
    sweep.mkdir(parents=True)
    OmegaConf.save({"hydra": {"overrides": {"task": ["model.learning_rate=1e-4,1e-3,1e-2", "data.batch_size=16"]}}},
                   sweep / "multirun.yaml")
    for job, lr, acc, loss in (("0", "1e-4", 0.70, 0.60), ("1", "1e-3", 0.90, 0.30), ("2", "1e-2", None, None)):
        (sweep / job / ".hydra").mkdir(parents=True)
        OmegaConf.save([f"model.learning_rate={lr}", "data.batch_size=16"], sweep / job / ".hydra" / "overrides.yaml")
        if acc is None:
            results = {"status": "failed", "error": "ValueError: loss is NaN at step 3",
                       "optimized_metric": {"name": "val/acc_best", "value": None}}
        else:
            results = {"status": "completed", "optimized_metric": {"name": "val/acc_best", "value": acc},
                       "val": {"val/acc_best": acc, "val/loss": loss}, "test": {"test/acc": acc - 0.05}}
            (sweep / job / "csv").mkdir()
            with open(sweep / job / "csv" / "metrics.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["epoch", "step", "train/loss", "val/acc", "val/acc_best"])
                writer.writerows([[0, 4, 0.9, "", ""], [0, 9, "", acc - 0.1, acc - 0.1], [1, 14, 0.5, "", ""],
                                  [1, 19, "", acc, acc]])
        (sweep / job / "results.json").write_text(json.dumps(results))
    return sweep


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_report_ranks_jobs_and_draws_plots(tmp_path: Path, capsys) -> None:
    sweep = fake_sweep(tmp_path)
    main([str(sweep)])
    out = sweep / "report"
    rows = read_csv(out / "report.csv")
    assert [(r["job"], r["status"], r["model.learning_rate"]) for r in rows] == [
        ("1", "completed", "1e-3"), ("0", "completed", "1e-4"), ("2", "failed", "1e-2")]
    assert "data.batch_size" not in rows[0]  # fixed for the whole sweep: not a column
    assert float(rows[0]["val/acc_best"]) == pytest.approx(0.9) and rows[2]["val/acc_best"] == ""
    assert rows[2]["error"] == "ValueError: loss is NaN at step 3"
    markdown = (out / "report.md").read_text()
    assert "| 2 | failed | 0.01 |" in markdown and "best: job 1" in markdown
    assert "no stored Optuna study behind them" in markdown  # a grid sweep: a history in job order, no importances
    for name in ("val_acc_best_vs_model.learning_rate.png", "learning_curves.png", "optimization_history.png"):
        assert (out / name).read_bytes()[:4] == PNG
        assert f"({name})" in markdown
    assert "3 jobs, 1 failed, best job 1" in capsys.readouterr().out


def test_report_ranks_by_another_metric_in_its_direction(tmp_path: Path) -> None:
    sweep = fake_sweep(tmp_path)
    main([str(sweep), "--metric", "val/loss", "--out", str(tmp_path / "by_loss")])
    rows = read_csv(tmp_path / "by_loss" / "report.csv")
    assert [r["job"] for r in rows] == ["1", "0", "2"]  # lower loss first (auto: minimize a loss)
    main([str(sweep), "--metric", "val/loss", "--direction", "maximize", "--out", str(tmp_path / "up")])
    assert [r["job"] for r in read_csv(tmp_path / "up" / "report.csv")] == ["0", "1", "2"]


def test_report_of_several_sweeps_labels_jobs_by_sweep(tmp_path: Path) -> None:
    first, second = fake_sweep(tmp_path, "a"), fake_sweep(tmp_path, "b")
    main([str(first), str(second), "--out", str(tmp_path / "study")])
    rows = read_csv(tmp_path / "study" / "report.csv")
    assert len(rows) == 6 and {r["job"] for r in rows[:2]} == {"a/1", "b/1"}
    assert [r["status"] for r in rows[-2:]] == ["failed", "failed"]


def test_report_refuses_a_directory_without_jobs(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path)])
    assert exit_info.value.code == 2
    assert "no job directories" in capsys.readouterr().err


class HydraLikeLauncher:
    """Lays jobs out as Hydra and llm-train do (.hydra/overrides.yaml, .hydra/hydra.yaml with the job's env_set,
    results.json), without training: a job reports x/3, 2x/3, x at steps 1..3 to its trial and stops when the
    pruner says so; trial 2's job crashes. The value depends on x only, never on y."""

    def __init__(self, sweep_dir: Path, study: optuna.Study) -> None:
        self.sweep_dir, self.study = sweep_dir, study  # the jobs' side of the study (one connection for all)

    def launch(self, job_overrides: list[list[str]], initial_job_idx: int) -> list[JobReturn]:
        returns = []
        for i, overrides in enumerate(job_overrides):
            job_dir, env = self.sweep_dir / str(initial_job_idx + i), job_env(overrides)
            (job_dir / ".hydra").mkdir(parents=True)
            OmegaConf.save([o for o in overrides if "env_set." not in o], job_dir / ".hydra" / "overrides.yaml")
            OmegaConf.save({"hydra": {"job": {"env_set": env}}}, job_dir / ".hydra" / "hydra.yaml")
            x = float(dict(o.split("=", 1) for o in overrides)["x"])
            link = TrialLink(**json.loads(env[TRIAL_ENV]))
            trial, results = reopen_trial(self.study, link.trial_id), {"status": "completed"}
            for step in (1, 2, 3):
                if link.number == 2:
                    results, value = {"status": "failed", "error": "ValueError: loss is NaN at step 1"}, math.nan
                    break
                value = x * step / 3
                trial.report(value, step)
                if trial.should_prune():
                    trial.set_user_attr(PRUNED_AT, step)
                    results = {"status": "pruned", PRUNED_AT: step}
                    break
            results.update(optimized_metric={"name": "val/acc", "value": value}, val={"val/acc": value})
            (job_dir / "results.json").write_text(json.dumps(results))
            hydra_cfg = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(job_dir)}}})
            returns.append(JobReturn(hydra_cfg=hydra_cfg, status=JobStatus.COMPLETED, _return_value=value))
        return returns


def optuna_sweeps(tmp_path: Path, names: str, n_trials: int) -> tuple[list[Path], str]:
    """One sqlite study, one sweep (restart) per name, each into its own multirun directory."""
    storage, dirs = f"sqlite:///{tmp_path}/optuna.db", []
    jobs_side = optuna.create_study(study_name="s", storage=storage, direction="maximize",
                                    pruner=optuna.pruners.MedianPruner(n_startup_trials=3))
    for name in names:
        sweeper = make_sweeper(tmp_path, storage, n_trials=n_trials, pruner="median",
                               pruner_options={"n_startup_trials": 3},
                               params={"x": "interval(0, 1)", "y": "interval(0, 1)"})
        dirs.append(tmp_path / "multiruns" / name)
        sweeper.config.hydra.sweep.dir = str(dirs[-1])
        sweeper.launcher = HydraLikeLauncher(dirs[-1], jobs_side)
        sweeper.sweep([])
    return dirs, storage


def test_report_of_a_study_over_two_sweep_dirs_counts_each_trial_once(tmp_path: Path, capsys) -> None:
    (first, second), storage = optuna_sweeps(tmp_path, "ab", n_trials=5)
    trials = optuna.load_study(study_name="s", storage=storage).trials
    states = [t.state for t in trials]
    n_done, n_pruned, n_failed = (states.count(s) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
    assert len(trials) == 10 and n_pruned >= 2 and n_failed == 1  # the fixture has every kind of trial
    main([str(first), str(second), str(first), "--out", str(tmp_path / "study")])  # `first` given twice
    out = tmp_path / "study"
    rows = read_csv(out / "report.csv")
    assert len(rows) == 10 and len({r["job"] for r in rows}) == 10
    pruned = [r for r in rows if r["status"] == "pruned"]
    assert len(pruned) == n_pruned and all(r[PRUNED_AT] in ("1", "2") for r in pruned)
    assert [r["status"] for r in rows] == ["completed"] * n_done + ["pruned"] * n_pruned + ["failed"] * n_failed
    markdown = (out / "report.md").read_text()
    counts = f"10 trials ({n_done} completed, {n_pruned} pruned, {n_failed} failed)"
    assert f"maximize: {counts}, 10 of them in the sweep directories above" in markdown
    assert (out / "optimization_history.png").read_bytes()[:4] == PNG
    assert "![optimization history](optimization_history.png)" in markdown
    assert f"from {n_done} completed trials" in markdown
    assert "| x |" in markdown and "| y |" in markdown  # Optuna's importance of each searched parameter
    printed = capsys.readouterr().out
    assert f"report: 10 jobs, {n_pruned} pruned, {n_failed} failed" in printed
    assert f"report: study s: {counts}; importances " in printed

    # The history is the study's, in trial order, best so far over completed trials only.
    jobs = [(job, None) for d in (first, second) for job in sweep_jobs(d)]
    (history,) = histories(jobs, "maximize")
    assert [p.number for p in history.points] == list(range(10))
    done = [t.value if t.state == TrialState.COMPLETE else -math.inf for t in trials]
    expected = [None if b == -math.inf else b for b in accumulate(done, max)]
    assert [p.best for p in history.points] == expected
    assert [p.value for p in history.points if p.state == "pruned"] == [t.value for t in trials
                                                                         if t.state == TrialState.PRUNED]
    # The second sweep alone: still the whole study's history, 5 of its trials in that directory.
    (alone,) = histories([(job, None) for job in sweep_jobs(second)], "maximize")
    assert len(alone.points) == 10 and alone.in_sweeps == 5


def test_report_without_the_study_database_falls_back_to_job_order(tmp_path: Path) -> None:
    (sweep,), storage = optuna_sweeps(tmp_path, "a", n_trials=3)
    (tmp_path / "optuna.db").rename(tmp_path / "moved.db")
    main([str(sweep)])
    markdown = (sweep / "report" / "report.md").read_text()
    assert f"study 's' not read ({storage}: no such database" in markdown
    assert "- 3 jobs (2 completed, 1 failed)" in markdown and (sweep / "report" / "optimization_history.png").is_file()


def test_best_so_far_counts_completed_trials_only() -> None:
    points = [Point(0, "completed", 0.5), Point(1, "pruned", 0.9), Point(2, "completed", 0.7), Point(3, "failed", None),
              Point(4, "completed", 0.6)]
    assert [p.best for p in with_best_so_far(points, "maximize")] == [0.5, 0.5, 0.7, 0.7, 0.7]
    assert [p.best for p in with_best_so_far(points, "minimize")] == [0.5, 0.5, 0.5, 0.5, 0.5]
    assert [p.best for p in with_best_so_far([Point(0, "failed", None), Point(1, "completed", 2.0)],
                                             "minimize")] == [None, 2.0]


def test_importances_rank_the_parameter_the_objective_depends_on() -> None:
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + 0 * t.suggest_float("y", 0, 1), n_trials=30)
    found, why = importances(study)
    assert why is None and set(found) == {"x", "y"} and found["x"] > 2 * found["y"]


def test_importances_say_in_one_line_why_there_are_none() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_float("y", 0, 1), n_trials=1)
    assert importances(study) == ({}, "no parameter importances: 1 completed trial(s), Optuna needs 2")
    one = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    one.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=5)
    assert importances(one) == ({}, "no parameter importances: only x was searched")
    flat = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    flat.optimize(lambda t: 0 * t.suggest_float("x", 0, 1) + 0 * t.suggest_float("y", 0, 1), n_trials=5)
    assert importances(flat)[1] == "no parameter importances: all 5 completed trials have the same value"


def searched_sweep(root: Path) -> Path:
    """An Optuna-style sweep directory: weight decay searched on a log scale over a narrow range (2.5x, so only the
    search space says log), the learning rate a plain interval, batch size a choice; one job of each state."""
    sweep = root / "searched"
    params = {"model.weight_decay": "tag(log, interval(1e-4, 1e-3))", "model.learning_rate": "interval(1e-5, 1e-4)",
              "data.batch_size": "choice(16, 32)"}
    sweep.mkdir(parents=True)
    OmegaConf.save({"hydra": {"sweeper": {"params": params}, "overrides": {"task": ["seed=1"]}}},
                   sweep / "multirun.yaml")
    jobs = [("completed", 0.8, "2e-4", "16"), ("completed", 0.9, "3e-4", "32"), ("pruned", 0.6, "4e-4", "16"),
            ("failed", None, "5e-4", "32"), ("running", None, "2.5e-4", "16")]
    for job, (status, value, wd, bs) in enumerate(jobs):
        job_dir = sweep / str(job)
        (job_dir / ".hydra").mkdir(parents=True)
        OmegaConf.save(["seed=1", f"model.weight_decay={wd}", f"model.learning_rate={2e-5 * (job + 1):g}",
                        f"data.batch_size={bs}"], job_dir / ".hydra" / "overrides.yaml")
        results = {"status": status, "optimized_metric": {"name": "val/acc_best", "value": value}}
        if value is not None:
            results["val"] = {"val/acc_best": value}
        (job_dir / "results.json").write_text(json.dumps(results))
    return sweep


def parameter_figure(sweep: Path, key: str):
    from lightning_llm.report import build_rows, log_scale_keys, metric_vs_param_figure, rank

    rows, metric, keys = build_rows([sweep], None)
    assert keys == ["model.weight_decay", "model.learning_rate", "data.batch_size"]
    return metric_vs_param_figure(rank(rows, "maximize"), metric, key, keys, log_scale_keys([sweep]))


def test_parameter_plots_show_every_trial_on_the_searched_scale(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    sweep = searched_sweep(tmp_path)
    fig = parameter_figure(sweep, "model.weight_decay")
    ax, bar = fig.axes  # the plot and the colour bar of the second swept parameter
    assert ax.get_xscale() == "log"  # tag(log, ...) in the search space, though the values span 2.5x
    trials = [c for c in ax.collections if c.get_label() != "best"]
    assert sum(len(c.get_offsets()) for c in trials) == 5  # pruned, failed and unfinished ones too
    assert {c.get_label() for c in trials} >= {"completed (2)", "pruned (1), last report", "failed (1)",
                                               "unfinished (1)"}
    assert all(c.get_array() is not None for c in trials)  # coloured by a parameter, not by state
    assert bar.get_ylabel() == "model.learning_rate"
    (star,) = [c for c in ax.collections if c.get_label() == "best"]
    assert list(star.get_offsets()[0]) == pytest.approx([3e-4, 0.9])
    faces = star.get_facecolors()
    assert len(faces) == 0 or faces[:, 3].max() == 0  # hollow: the point inside stays visible
    assert star.get_zorder() < min(c.get_zorder() for c in trials)  # and under every point
    plt.close(fig)

    fig = parameter_figure(sweep, "model.learning_rate")
    assert fig.axes[0].get_xscale() == "log"  # a learning rate: log whatever its span
    assert fig.axes[1].get_ylabel() == "model.weight_decay"
    plt.close(fig)
    fig = parameter_figure(sweep, "data.batch_size")
    assert fig.axes[0].get_xscale() == "linear"
    plt.close(fig)
    main([str(sweep)])  # and the report draws them
    assert (sweep / "report" / "val_acc_best_vs_model.weight_decay.png").read_bytes()[:4] == PNG


def test_a_weight_decay_grid_stays_on_a_linear_axis(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    sweep = searched_sweep(tmp_path)
    OmegaConf.save({"hydra": {"overrides": {"task": ["model.weight_decay=2e-4,5e-4"]}}}, sweep / "multirun.yaml")
    fig = parameter_figure(sweep, "model.weight_decay")
    assert fig.axes[0].get_xscale() == "linear"
    plt.close(fig)
