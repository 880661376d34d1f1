"""`sweep_keep=best|all`: at the end of a multirun (the sweep summary callback) only the best finished trial keeps
its checkpoints and hf_model/; worse completed trials and pruned ones keep their results, logs and config, and their
results.json says what was removed; failed, unfinished or interrupted trials are never touched."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from lightning_llm.config.precheck import precheck
from lightning_llm.errors import UserError
from lightning_llm.report import main as report_main
from lightning_llm.tracking.keep import REMOVED_KEY
from lightning_llm.tracking.sweep import SweepSummary
from tests.test_sweeps import TINY_JOB

HEAVY = ("checkpoints/best-epoch=0.ckpt", "checkpoints/last.ckpt", "hf_model/model.safetensors")
LIGHT = ("results.json", ".hydra/config.yaml", ".hydra/overrides.yaml", "classification.log", "csv/metrics.csv")


def fake_job(sweep: Path, job: str, status: str, value: float | None, metric: str = "val/acc_best",
             lr: str = "1e-4") -> Path:
    """A job directory as llm-train leaves it, with checkpoints and an export of 1000 bytes each."""
    job_dir = sweep / job
    (job_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save([f"model.learning_rate={lr}"], job_dir / ".hydra" / "overrides.yaml")
    OmegaConf.save({"seed": 42}, job_dir / ".hydra" / "config.yaml")
    for name in ("classification.log", "csv/metrics.csv", *HEAVY):
        (job_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (job_dir / name).write_bytes(b"x" * 1000)
    results = {"status": status, "optimized_metric": {"name": metric, "value": value},
               "best_checkpoint": str(job_dir / HEAVY[0]), "last_checkpoint": str(job_dir / HEAVY[1]),
               "hf_model": str(job_dir / "hf_model"), "val": {metric: value} if value is not None else {}}
    (job_dir / "results.json").write_text(json.dumps(results))
    return job_dir


def end_sweep(sweep: Path, keep: str | None = "best", direction: str | None = None) -> None:
    """What Hydra calls once every job of the sweep has returned."""
    config = {"hydra": {"sweep": {"dir": str(sweep)}, "sweeper": {"direction": direction} if direction else {}}}
    if keep is not None:
        config["sweep_keep"] = keep
    SweepSummary().on_multirun_end(OmegaConf.create(config))


def has_heavy(job_dir: Path) -> bool:
    return any((job_dir / name).exists() for name in HEAVY)


def results(job_dir: Path) -> dict:
    return json.loads((job_dir / "results.json").read_text())


def test_only_the_best_finished_trial_keeps_checkpoints(tmp_path: Path, capsys) -> None:
    sweep = tmp_path / "sweep"
    worse, best, pruned = (fake_job(sweep, "0", "completed", 0.7), fake_job(sweep, "1", "completed", 0.9),
                           fake_job(sweep, "2", "pruned", 0.95))  # a pruned trial's last report may look better
    untouched = [fake_job(sweep, str(i), status, None) for i, status in
                 enumerate(("failed", "diverged", "preempted", "interrupted", "running"), start=3)]
    untouched.append(fake_job(sweep, "8", "completed", None))  # no finite value: nothing to compare, kept
    no_results = fake_job(sweep, "9", "completed", 0.1)
    (no_results / "results.json").unlink()  # killed hard, or another entry point
    with pytest.raises(SystemExit) as exit_info:  # failed jobs: the summary's exit code 1, after pruning
        end_sweep(sweep)
    assert exit_info.value.code == 1
    assert all((best / name).is_file() for name in (*HEAVY, *LIGHT))
    assert results(best)["best_checkpoint"] == str(best / HEAVY[0]) and REMOVED_KEY not in results(best)
    for job in (worse, pruned):
        assert not has_heavy(job) and not (job / "checkpoints").exists() and not (job / "hf_model").exists()
        assert all((job / name).is_file() for name in LIGHT)  # results, config, logs, metrics stay
        removed = results(job)[REMOVED_KEY]
        assert removed["by"] == "sweep_keep=best" and removed["best_job"] == "1"
        assert removed["removed"] == ["checkpoints/", "hf_model/"] and removed["bytes"] == 3000
        assert results(job)["best_checkpoint"] is results(job)["hf_model"] is None  # no path to a missing file
        assert results(job)["optimized_metric"]["value"] is not None  # the outcome itself stays
    for job in (*untouched, no_results):
        assert all((job / name).is_file() for name in HEAVY), job.name
    assert "sweep_keep=best: job 1 (val/acc_best=0.9) keeps checkpoints and hf_model/; removed from 2 other " \
           "trial(s), 6.0 KB freed" in capsys.readouterr().out

    with pytest.raises(SystemExit):  # the callback again (a resumed sweep into the same directory): nothing more goes
        end_sweep(sweep)
    assert all((best / name).is_file() for name in HEAVY) and results(worse)[REMOVED_KEY]["bytes"] == 3000


def test_the_direction_follows_the_metric_or_the_sweeper(tmp_path: Path) -> None:
    low, high = (fake_job(tmp_path / "a", "0", "completed", 0.2, "val/loss"),
                 fake_job(tmp_path / "a", "1", "completed", 0.5, "val/loss"))
    end_sweep(tmp_path / "a")  # auto: a loss is minimized
    assert has_heavy(low) and not has_heavy(high)
    low, high = (fake_job(tmp_path / "b", "0", "completed", 0.2, "val/loss"),
                 fake_job(tmp_path / "b", "1", "completed", 0.5, "val/loss"))
    end_sweep(tmp_path / "b", direction="maximize")  # the Optuna sweeper's hydra.sweeper.direction
    assert has_heavy(high) and not has_heavy(low)


def test_ties_keep_every_tied_trial_and_all_keeps_everything(tmp_path: Path, capsys) -> None:
    tied = [fake_job(tmp_path / "tie", str(i), "completed", 0.9) for i in range(2)]
    worse = fake_job(tmp_path / "tie", "2", "completed", 0.5)
    end_sweep(tmp_path / "tie")
    assert all(has_heavy(j) for j in tied) and not has_heavy(worse)
    assert "jobs 0, 1 (val/acc_best=0.9) keep checkpoints" in capsys.readouterr().out

    jobs = [fake_job(tmp_path / "all", str(i), "completed", v) for i, v in enumerate((0.5, 0.9))]
    for keep in ("all", None):  # sweep_keep=all, or a command whose config has no sweep_keep
        end_sweep(tmp_path / "all", keep=keep)
        assert all(has_heavy(j) and REMOVED_KEY not in results(j) for j in jobs)
    assert "sweep_keep" not in capsys.readouterr().out


def test_nothing_is_removed_outside_the_end_of_a_multirun() -> None:
    """A single run and each job only ever see Hydra's no-op hooks: files are removed at the end of a sweep only."""
    for hook in ("on_run_start", "on_run_end", "on_job_start", "on_job_end", "on_multirun_start"):
        assert getattr(SweepSummary, hook) is getattr(Callback, hook), hook


def test_sweep_keep_defaults_to_best_and_refuses_other_values() -> None:
    assert OmegaConf.load(Path(__file__).parents[1] / "conf" / "train.yaml").sweep_keep == "best"
    precheck(["-m", "sweep_keep=all", "model.learning_rate=1e-4,1e-3"], "train")
    with pytest.raises(UserError, match=r"^sweep_keep='bset': use one of best, all$"):
        precheck(["-m", "sweep_keep=bset"], "train")


def test_report_says_which_trials_lost_their_checkpoints(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for job, value, lr in (("0", 0.7, "1e-4"), ("1", 0.9, "1e-3")):
        fake_job(sweep, job, "completed", value, lr=lr)
    OmegaConf.save({"hydra": {"overrides": {"task": ["model.learning_rate=1e-4,1e-3"]}}}, sweep / "multirun.yaml")
    end_sweep(sweep)
    report_main([str(sweep)])
    with open(sweep / "report" / "report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["job"], r["val/acc_best"], r["checkpoints"]) for r in rows] == [("1", "0.9", "kept"),
                                                                               ("0", "0.7", "removed")]
    assert "checkpoints and hf_model/ of 1 trial(s) removed (sweep_keep=best)" in \
        (sweep / "report" / "report.md").read_text()


@pytest.mark.slow  # a 2-job CLI sweep (~30 s on 2 cores)
def test_a_real_sweep_keeps_only_the_best_trials_checkpoints(run_cli, tmp_path: Path) -> None:
    proc = run_cli("lightning_llm.train", "-m", *TINY_JOB, "logger=csv", "model.learning_rate=1e-5,3e-3",
                   "optimized_metric=val/loss", "sweep_keep=best")  # a loss: never tied
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = [p.parent for p in tmp_path.glob("outputs/*/multiruns/*/multirun.yaml")]
    jobs = {job: results(sweep / job) for job in "01"}
    values = {job: r["optimized_metric"]["value"] for job, r in jobs.items()}
    assert all(r["status"] == "completed" for r in jobs.values()) and values["0"] != values["1"]
    best, other = sorted("01", key=lambda j: values[j])  # a loss is minimized
    assert (sweep / best / "checkpoints" / "last.ckpt").is_file()
    assert (sweep / best / "hf_model" / "config.json").is_file() and REMOVED_KEY not in jobs[best]
    assert not (sweep / other / "checkpoints").exists() and not (sweep / other / "hf_model").exists()
    assert jobs[other][REMOVED_KEY]["best_job"] == best and jobs[other][REMOVED_KEY]["bytes"] > 0
    assert (sweep / other / ".hydra" / "config.yaml").is_file() and list((sweep / other).rglob("metrics.csv"))
    assert f"sweep_keep=best: job {best} " in proc.stdout
