"""Restart parity: a run preempted (SIGTERM) mid-epoch and relaunched with ckpt_path=last trains exactly like a run
that was never interrupted: same per-step losses after the restart, same final validation metrics (fp32, CPU)."""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from lightning_llm.config.validation import resolve_ckpt_path
from lightning_llm.data.sources import BUNDLED_DIR
from lightning_llm.runtime.results import PREEMPTED_EXIT_CODE
from lightning_llm.tracking.loggers import WANDB_ID_FILE
from tests.conftest import TINY_BERT, TINY_GPT

# 6 batches per epoch, 2 epochs: the kill at step 3 is mid-epoch, and the restored run crosses an epoch boundary.
RUN = ["trainer.max_epochs=2", "++trainer.limit_train_batches=6", "++trainer.limit_val_batches=2",
       "trainer.log_every_n_steps=1", "data.batch_size=8", "callbacks.rich_progress_bar=null", "test=false",
       "export=false"]
TASKS = {
    "classification": TINY_BERT,
    # GPT-2's default dropout (0.1) stays on: the restored RNG must give the same dropout masks.
    "gpt": ["model=gpt", "data=text_corpus", *TINY_GPT, "model.max_position_embeddings=64", "data.block_size=32",
            "callbacks.generation_samples=null"],
    # Script-launched DDP on 2 CPU processes: every rank gets SIGTERM, at its own point of step 3; they agree to
    # stop after the same batch, and each rank's RNG streams come back.
    "ddp": [*TINY_BERT, "hardware=ddp", "hardware.accelerator=cpu", "hardware.devices=2",
            "hardware.precision=32-true"],
    # ddp_spawn: the workers save, and the main process learns of the preemption from their exit code.
    "ddp_spawn": [*TINY_BERT, "hardware=ddp_sim"],
    # LoRA: the frozen base, the adapters and their optimizer state all come back.
    "lora": [*TINY_BERT, "peft=lora"],
    # Length-grouped batches: the grouped order continues where it stopped.
    "group_by_length": [*TINY_BERT, "data.group_by_length=true"],
    # Chat SFT: conversations through a ChatML template, loss on the assistant's tokens.
    "chat": ["model=gpt", "data=chat", *TINY_GPT, "model.model_type=llama", "model.max_position_embeddings=256",
             "data.chat_template=chatml", "data.max_length=160", "callbacks.generation_samples=null"],
}
SLOW = {"classification", "gpt", "ddp", "ddp_spawn", "lora", "group_by_length", "chat"}
KILL_AT = 3
PREEMPT = ["+callbacks.fault._target_=lightning_llm.callbacks.FaultInjection",
           f"+callbacks.fault.sigterm_at_step={KILL_AT}"]


def train_losses(run_dir: Path) -> dict[int, float]:
    """train/loss per step from the CSV logger (the later row wins if a step was logged twice)."""
    with open(run_dir / "csv" / "metrics.csv") as f:
        return {int(row["step"]): float(row["train/loss"]) for row in csv.DictReader(f) if row.get("train/loss")}


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


# All slow (classification ~25 s, GPT ~35 s, chat ~20 s of CPU, the two DDP variants ~90 s each): `pytest -m slow tests/test_resume.py`.
@pytest.mark.parametrize("task", [pytest.param(task, marks=[pytest.mark.slow] if task in SLOW else [])
                                  for task in TASKS])
def test_sigterm_mid_epoch_then_resume_matches_uninterrupted_run(run_cli, tmp_path: Path, task: str) -> None:
    args = [*TASKS[task], *RUN]
    # W&B (offline) on the interrupted run only for classification: the relaunch must continue the same W&B run.
    with_wandb = task == "classification"
    logger = "logger=many" if with_wandb else "logger=csv"
    # One intra-op thread in every run: float sums are split by thread count, so a process that got fewer threads
    # rounds differently (CI once ran the reference with 1 of 2 threads: step 11 moved by 1 ulp). Same count, same
    # bits; a resume bug (RNG, data order, optimizer or scheduler state) moves losses by far more than rounding.
    env = {"OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path),
           "WANDB_CONFIG_DIR": str(tmp_path / "wandb_home"), "WANDB_CACHE_DIR": str(tmp_path / "wandb_home")}

    reference = tmp_path / "reference"
    proc = run_cli("lightning_llm.train", *args, "logger=csv", f"hydra.run.dir={reference}",
                   env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]

    run_dir = tmp_path / "preempted"
    proc = run_cli("lightning_llm.train", *args, logger, *PREEMPT, f"paths.output_dir={run_dir}", env=env)
    assert proc.returncode == PREEMPTED_EXIT_CODE, proc.stderr[-3000:]
    assert f"relaunch the same command with ckpt_path=last paths.output_dir={run_dir}" in proc.stderr
    assert results(run_dir)["status"] == "preempted"
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    stopped_at = checkpoint["global_step"]  # DDP: the ranks agree on the signal after the next batch
    assert stopped_at == KILL_AT + task.startswith("ddp")

    proc = run_cli("lightning_llm.train", *args, logger, *PREEMPT, "ckpt_path=last", f"paths.output_dir={run_dir}",
                   env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resuming from {run_dir / 'checkpoints' / 'last.ckpt'}" in proc.stdout

    expected, resumed = train_losses(reference), train_losses(run_dir)
    assert len(expected) == 12
    after_kill = {step: loss for step, loss in expected.items() if step >= stopped_at}
    assert {step: loss for step, loss in resumed.items() if step >= stopped_at} == after_kill  # bit-exact
    final, reference_final = results(run_dir), results(reference)
    assert final["status"] == "completed" and final["global_step"] == reference_final["global_step"]
    assert final["val"] == reference_final["val"]

    if with_wandb:
        run_id = (run_dir / WANDB_ID_FILE).read_text().strip()
        offline_runs = sorted((run_dir / "wandb").glob("offline-run-*"))
        assert len(offline_runs) == 2 and all(p.name.endswith(f"-{run_id}") for p in offline_runs)


def test_ckpt_path_last_without_checkpoint_starts_fresh(compose_cfg, capsys) -> None:
    cfg = compose_cfg([*TINY_BERT, "ckpt_path=last"])
    assert resolve_ckpt_path(cfg) is None
    assert "starting fresh" in capsys.readouterr().out


def test_ckpt_path_last_picks_the_newest_last_checkpoint(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg([*TINY_BERT, "ckpt_path=last"])
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    checkpoints.mkdir(parents=True)
    older, newer = checkpoints / "last.ckpt", checkpoints / "last-v1.ckpt"
    older.write_bytes(b"old")
    newer.write_bytes(b"new")
    os.utime(older, (1, 1))
    assert resolve_ckpt_path(cfg) == str(newer)
    slurm = Path(cfg.paths.output_dir) / "hpc_ckpt_1.ckpt"  # Lightning's SLURM auto-requeue checkpoint
    slurm.write_bytes(b"newest")
    os.utime(newer, (2, 2))
    assert resolve_ckpt_path(cfg) == str(slurm)
    with open_dict(cfg):
        cfg.ckpt_path = str(older)
    assert resolve_ckpt_path(cfg) == str(older)


def _best_so_far_data(tmp_path: Path, task: str) -> list[str]:
    """Data on which the best validation comes first and the metric then gets worse, so a resumed run can report
    the uninterrupted run's best only if it kept the best from before the restart.
    classification: a trigger word decides the label in training, validation has the labels flipped (val/acc falls
    as the model learns); gpt: validation text of letters and digits the training corpus never has (val/ppl rises
    as the model learns the corpus)."""
    rng = random.Random(0)
    if task == "classification":
        fillers = ("the a film plot actor scene music was is very quite rather long short slow bright dark story "
                   "ending camera light old new").split()

        def write(path: Path, rows: int, flipped: bool) -> str:
            with open(path, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["text", "label"])
                for i in range(rows):
                    words = [rng.choice(fillers) for _ in range(rng.randint(5, 9))]
                    if i % 2 == 0:
                        words.insert(rng.randrange(len(words) + 1), "zebra")
                    writer.writerow([" ".join(words), "positive" if (i % 2 == 0) != flipped else "negative"])
            return str(path)

        return [*TINY_BERT, "model.learning_rate=3e-2", "data.batch_size=16",
                f"data.train_file={write(tmp_path / 'train.csv', 256, False)}",
                f"data.validation_file={write(tmp_path / 'validation.csv', 64, True)}"]
    odd = tmp_path / "validation.txt"
    odd.write_text("".join(" ".join("".join(rng.choice("QXZJKVW0123456789") for _ in range(rng.randint(2, 6)))
                                    for _ in range(12)) + "\n" for _ in range(40)))
    return [*TASKS["gpt"], "data.batch_size=8", "++trainer.limit_val_batches=2",
            f"data.train_file={BUNDLED_DIR / 'corpus_train.txt'}", f"data.validation_file={odd}"]


@pytest.mark.slow  # three CLI runs per task (~40 s)
@pytest.mark.parametrize(("task", "metric", "mode"), [("classification", "val/acc", max), ("gpt", "val/ppl", min)])
def test_best_so_far_survives_a_resume_after_validation(run_cli, tmp_path: Path, task: str, metric: str,
                                                        mode) -> None:
    """Killed after the second of three validations, whose best is the first: last.ckpt holds that best, and the
    resumed run logs the same validations and the same `<metric>_best` as a run never interrupted (dropping the
    restored best would report the third validation's worse value)."""
    args = [*_best_so_far_data(tmp_path, task), "trainer.max_epochs=3", "++trainer.limit_train_batches=6",
            "trainer.log_every_n_steps=1", "callbacks.rich_progress_bar=null",
            "test=false", "export=false", "logger=csv"]
    env = {"OMP_NUM_THREADS": "1"}  # same thread count in every run: same float sums (see the test above)

    def validations(run_dir: Path) -> list[float]:
        with open(run_dir / "csv" / "metrics.csv") as f:
            return [float(row[metric]) for row in csv.DictReader(f) if row.get(metric)]

    reference = tmp_path / "reference"
    proc = run_cli("lightning_llm.train", *args, f"paths.output_dir={reference}", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = validations(reference)
    # What makes the test able to fail: the best comes before the restart and is strictly better than what follows.
    assert len(expected) == 3 and mode(expected[:2]) == mode(expected) != expected[2], expected
    assert results(reference)["val_last"][f"{metric}_best"] == pytest.approx(mode(expected))

    run_dir = tmp_path / "run"
    preempted = [*args, *PREEMPT[:1], "+callbacks.fault.sigterm_at_step=13", f"paths.output_dir={run_dir}"]
    assert run_cli("lightning_llm.train", *preempted, env=env).returncode == PREEMPTED_EXIT_CODE
    assert validations(run_dir) == expected[:2]
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["lightning_llm_best"] == {metric: pytest.approx(mode(expected[:2]))}
    assert {"optimizer_states", "lr_schedulers", "callbacks"} <= set(checkpoint)  # what a resume needs
    (best,) = (run_dir / "checkpoints").glob("best-*.ckpt")
    best_checkpoint = torch.load(best, map_location="cpu", weights_only=True)  # weights only: test and export
    assert "optimizer_states" not in best_checkpoint and best_checkpoint["state_dict"].keys() == \
        checkpoint["state_dict"].keys()

    proc = run_cli("lightning_llm.train", *preempted, "ckpt_path=last", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert validations(run_dir) == expected  # the CSV continues: 2 validations before the kill, 1 after
    resumed, uninterrupted = results(run_dir), results(reference)
    assert resumed["val_last"] == uninterrupted["val_last"]  # <metric>_best included
    assert resumed["val"] == uninterrupted["val"]  # the best checkpoint's validation
