"""`hydra/launcher=slurm` against a real two-node SLURM cluster started on this machine (`-m slurm`; see
tests/slurm_cluster.py): sbatch sweeps and searches, two-node DDP, preemption and requeue, time-outs.

Each node has half the machine's CPUs and every job asks for one CPU per task. Every wait has a time limit."""

from __future__ import annotations

import json
import re
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import TINY_BERT
from tests.slurm_cluster import finish, job_ids, job_info, slurm, slurm_env, start_sweep, wait_for  # noqa: F401

pytestmark = pytest.mark.slurm

LAUNCH = ["hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=10"]
TINY = ["experiment=classify_demo", *TINY_BERT, "data.max_length=32", "logger=csv", "++trainer.limit_val_batches=2",
        "++trainer.limit_test_batches=1"]
# Deterministic training (no dropout) long enough for a signal to land in it, with last.ckpt every 5 steps.
LONG = [*TINY, "model.dropout=0.0", "data.batch_size=8", "trainer.max_epochs=100", "trainer.max_steps=300",
        "callbacks.step_checkpoint.every_n_train_steps=5", "test=false"]


def sweep_dir(root: Path) -> Path:
    (multirun,) = root.glob("outputs/*/multiruns/*/multirun.yaml")
    return multirun.parent


def results(job_dir: Path) -> dict:
    return json.loads((job_dir / "results.json").read_text())


def test_grid_sweep_one_sbatch_job_per_point(slurm_env, tmp_path: Path) -> None:
    proc = finish(start_sweep(slurm_env, tmp_path, *LAUNCH, *TINY, "trainer.max_epochs=1",
                              "++trainer.limit_train_batches=2", "model.num_attention_heads=2,3"), timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Submitit 'slurm' sweep output dir" in proc.stdout
    summary = [line for line in proc.stderr.splitlines() if line.startswith("sweep:")]
    assert len(summary) == 1 and summary[0].startswith("sweep: 1 of 2 jobs failed (job 1, failed:"), proc.stderr
    sweep = sweep_dir(tmp_path)
    ok, failed = results(sweep / "0"), results(sweep / "1")
    assert ok["status"] == "completed" and ok["run_dir"] == str(sweep / "0") and (sweep / "0" / "hf_model").is_dir()
    assert failed["status"] == "failed" and "not a multiple of the number of attention heads" in failed["error"]
    # One SLURM job (array task) per point, each run by SLURM to its end.
    tasks = job_ids(sweep)
    assert tasks == [f"{tasks[0].split('_')[0]}_{n}" for n in (0, 1)]
    for task in tasks:
        assert wait_for(lambda: job_info(slurm_env, task)["JobState"] != "RUNNING", 60, "the job's end")
        assert job_info(slurm_env, task)["JobState"] == "COMPLETED"
    # No import noise in the jobs' stderr: a job unpickles its task function before any command module runs.
    logs = sorted((sweep / ".submitit").glob("*/*_log.err"))
    assert len(logs) == 2 and not any("Failed to load" in log.read_text() for log in logs), logs


def test_optuna_search_one_sbatch_job_per_trial(slurm_env, tmp_path: Path) -> None:
    proc = finish(start_sweep(slurm_env, tmp_path, "hparams_search=optuna", *LAUNCH, *TINY, "trainer.max_epochs=1",
                              "++trainer.limit_train_batches=2", "hydra.sweeper.n_trials=2",
                              "hydra.sweeper.n_jobs=2"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sweep: 2 jobs completed" in proc.stdout
    sweep = sweep_dir(tmp_path)
    (db,) = tmp_path.glob("outputs/*/optuna.db")
    (study,) = optuna.get_all_study_summaries(storage=f"sqlite:///{db}")
    trials = optuna.load_study(study_name=study.study_name, storage=f"sqlite:///{db}").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    for job, trial in zip("01", trials):
        assert results(sweep / job)["optimized_metric"]["value"] == pytest.approx(trial.value)
    assert len(job_ids(sweep)) == 2


def test_two_node_ddp_matches_one_process(slurm_env, run_cli, tmp_path: Path) -> None:
    """One task per node, gloo between them: the same validation metrics as one process with the global batch."""
    common = [*TINY, "model.dropout=0.0", "model.learning_rate=3e-3", "trainer.max_epochs=1",
              "++trainer.limit_train_batches=20", "hardware.precision=32-true"]
    (tmp_path / "two").mkdir()
    two = finish(start_sweep(slurm_env, tmp_path / "two", *LAUNCH, *common, "hardware=ddp", "hardware.accelerator=cpu",
                             "hardware.devices=1", "hardware.num_nodes=2", "data.batch_size=16"), timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    one = run_cli("lightning_llm.train", *common, "data.batch_size=32", "paths.output_dir=one",
                  env={"OMP_NUM_THREADS": "1"})
    assert one.returncode == 0, one.stderr[-3000:]

    sweep = sweep_dir(tmp_path / "two")
    (job_id,) = job_ids(sweep)
    info = wait_for(lambda: (i := job_info(slurm_env, job_id))["JobState"] != "RUNNING" and i, 60, "the job's end")
    assert info["JobState"] == "COMPLETED" and info["NumNodes"] == "2" and info["NodeList"] == "llm-node[1-2]"
    # Rank 0 and rank 1, one per node, in one run directory with one results.json and one export.
    logs = sorted(p.name for p in (sweep / ".submitit" / job_id).glob("*_log.err"))
    assert logs == [f"{job_id}_0_log.err", f"{job_id}_1_log.err"]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in (sweep / ".submitit" / job_id / f"{job_id}_1_log.err").read_text()
    assert sorted(p.name for p in sweep.iterdir() if not p.name.startswith(".")) == ["0", "multirun.yaml"]
    assert not list((tmp_path / "two").glob("outputs/*/runs"))
    ddp, reference = results(sweep / "0"), results(tmp_path / "one")
    assert ddp["status"] == "completed" and (sweep / "0" / "hf_model" / "config.json").is_file()
    assert ddp["global_step"] == reference["global_step"] == 20
    for name, value in reference["val"].items():
        assert ddp["val"][name] == pytest.approx(value, abs=1e-5), name


def test_signalled_job_saves_is_requeued_and_resumes_to_the_same_metrics(slurm_env, run_cli, tmp_path: Path) -> None:
    """SLURM signals the job (submitit's SIGUSR2, as before a time limit or on preemption) mid-training: it saves
    last.ckpt at a batch boundary, is requeued, resumes in the same run directory and ends like an uninterrupted
    run. The limit (60 min) is far, so this counts as a preemption, not a time-out."""
    sweep_proc = start_sweep(slurm_env, tmp_path, "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=60",
                             *LONG, "ckpt_path=last")
    try:
        job_dir = wait_for(lambda: next(iter(tmp_path.glob("outputs/*/multiruns/*/0")), None), 120, "the job dir")
        wait_for(lambda: (job_dir / "checkpoints" / "last.ckpt").is_file(), 120, "the first step checkpoint")
        (job_id,) = wait_for(lambda: job_ids(job_dir.parent), 30, "the job id")
        slurm(slurm_env, "scancel", "--signal=USR2", job_id)
        proc = finish(sweep_proc, timeout=300)
    finally:
        sweep_proc.kill()
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The sweep returns once the job wrote its result; SLURM marks the job's end a moment later.
    info = wait_for(lambda: (i := job_info(slurm_env, job_id))["JobState"] != "RUNNING" and i, 60, "the job's end")
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", info
    logs = job_dir.parent / ".submitit" / job_id
    log = "".join(p.read_text() for p in (logs / f"{job_id}_0_log.out", logs / f"{job_id}_0_log.err") if p.is_file())
    assert f"resuming from {job_dir / 'checkpoints' / 'last.ckpt'}" in log, log[-3000:]
    # Saved at the batch boundary after the signal, not only by the every-5-steps checkpoint: without the save,
    # submitit's handler requeued mid-step and the run resumed from an older step (metrics still equal, so this
    # line is what tells the two apart).
    assert re.search(r"preempted \(SIGTERM\) at step \d+: saved .*last\.ckpt", log), log[-3000:]
    assert sorted(d.name for d in job_dir.parent.iterdir() if not d.name.startswith(".")) == ["0", "multirun.yaml"]

    reference = run_cli("lightning_llm.train", *LONG, "paths.output_dir=reference", env={"OMP_NUM_THREADS": "1"})
    assert reference.returncode == 0, reference.stderr[-3000:]
    requeued, uninterrupted = results(job_dir), results(tmp_path / "reference")
    assert requeued["status"] == "completed" and requeued["global_step"] == uninterrupted["global_step"] == 300
    assert requeued["val"] == uninterrupted["val"]


def test_job_past_its_time_limit_too_often_fails_and_the_sweep_says_so(slurm_env, tmp_path: Path) -> None:
    """A 2-minute limit, submitit's signal 60 s before it, no time-out allowed (max_num_timeout=0): the job saves,
    is not requeued, ends failed, and the sweep's last line says so. Training has no end of its own (no epoch limit,
    no early stopping): a fast machine finishes LONG's 100 epochs, or plateaus, before the signal."""
    proc = finish(start_sweep(slurm_env, tmp_path, "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=2",
                              "hydra.launcher.signal_delay_s=60", "hydra.launcher.max_num_timeout=0", *LONG,
                              "trainer.max_steps=1000000", "trainer.max_epochs=-1", "~callbacks.early_stopping",
                              "ckpt_path=last"), timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    summary = [line for line in proc.stderr.splitlines() if line.startswith("sweep:")]
    assert len(summary) == 1 and "sweep: 1 of 1 jobs failed (job 0, failed:" in summary[0], proc.stderr[-3000:]
    assert "timed-out too many times" in summary[0]
    job_dir = sweep_dir(tmp_path) / "0"
    assert results(job_dir)["status"] == "failed" and (job_dir / "checkpoints" / "last.ckpt").is_file()
