"""A diverging run stops at the first NaN loss, says at which step, keeps the last good checkpoint and reports a
failed status instead of metrics."""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from pytorch_lightning.plugins import TorchCheckpointIO

from lightning_llm.callbacks import NanGuard
from lightning_llm.callbacks.nan_guard import KeepProvenCheckpointIO
from lightning_llm.errors import TrainingDivergedError
from lightning_llm.runtime import builders
from lightning_llm.runtime.checkpoints import load_module
from tests.conftest import TINY_BERT

NAN_RUN = [*TINY_BERT, "model.learning_rate=1e6", "model.warmup_ratio=0.5", "trainer.max_epochs=1", "++trainer.limit_train_batches=8",
           "++trainer.limit_val_batches=2", "data.batch_size=8", "callbacks.step_checkpoint.every_n_train_steps=1",
           "callbacks.rich_progress_bar=null", "logger=csv"]


def _training_batch(cfg: Any, step: int) -> dict[str, torch.Tensor]:
    """The batch that step `step` of epoch 0 trains on (the order is a function of the seed)."""
    datamodule, _, _ = builders.build_data_and_model(cfg)
    return next(itertools.islice(iter(datamodule.train_dataloader()), step - 1, None))


def _loss(ckpt: Path, batch: dict[str, torch.Tensor]) -> float:
    with torch.no_grad():
        return float(load_module(ckpt).model(**batch).loss)  # eval mode: no dropout


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(run_cli, compose_cfg, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = run_cli("lightning_llm.train", *NAN_RUN, f"hydra.run.dir={run_dir}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    match = re.search(r"^error: train/loss is not finite \(NaN/inf\) at step (\d+)", proc.stderr, re.MULTILINE)
    assert match, proc.stderr[-3000:]
    nan_step = int(match[1])
    assert nan_step >= 3  # the lr warms up from 0: step 1 cannot diverge

    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "diverged" and f"at step {nan_step}" in results["error"]
    assert f"checkpoints/last.ckpt holds step {nan_step - 2}" in results["error"]
    assert results["optimized_metric"]["value"] is None and "val" not in results and "test" not in results
    assert not (run_dir / "hf_model").exists()

    # last.ckpt was written every step; it now holds the weights from before the diverging update, and those that
    # produced the NaN are kept aside (nothing deleted, no backup left over).
    checkpoints = run_dir / "checkpoints"
    kept = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)
    diverged = checkpoints / f"diverged-step{nan_step - 1}.ckpt"
    assert kept["global_step"] == nan_step - 2
    assert torch.load(diverged, map_location="cpu", weights_only=True)["global_step"] == nan_step - 1
    assert not list(checkpoints.glob("previous-*"))
    batch = _training_batch(compose_cfg(NAN_RUN), nan_step)
    assert math.isfinite(_loss(checkpoints / "last.ckpt", batch))
    assert not math.isfinite(_loss(diverged, batch))  # what last.ckpt held before the guard put it aside


def _trainer(step: int) -> SimpleNamespace:
    return SimpleNamespace(global_step=step, current_epoch=0, world_size=1)


def test_deferred_check_still_stops_before_a_checkpoint_is_written() -> None:
    guard = NanGuard(check_every_n_steps=100)
    for step, loss in ((1, 0.7), (2, float("nan")), (3, 0.6)):
        guard.on_train_batch_end(_trainer(step), None, {"loss": torch.tensor(loss)}, None, 0)
    with pytest.raises(TrainingDivergedError, match="at step 2 "):
        guard.on_save_checkpoint(_trainer(3), None, {})


def test_finite_losses_and_skipped_steps_pass() -> None:
    guard = NanGuard()
    guard.on_train_batch_end(_trainer(1), None, {"loss": torch.tensor(0.5)}, None, 0)
    guard.on_train_batch_end(_trainer(1), None, None, None, 1)  # a step that returned no loss
    guard.on_save_checkpoint(_trainer(1), None, {})
    with pytest.raises(TrainingDivergedError, match="at step 2 "):
        guard.on_train_batch_end(_trainer(2), None, torch.tensor(float("inf")), None, 2)


def _step(guard: NanGuard, step: int, loss: float) -> None:
    guard.on_train_batch_end(_trainer(step), None, {"loss": torch.tensor(loss)}, None, 0)


def test_a_checkpoint_is_overwritten_only_once_its_successor_is_proven(tmp_path: Path) -> None:
    guard, last = NanGuard(), tmp_path / "last.ckpt"
    io = KeepProvenCheckpointIO(TorchCheckpointIO(), guard)
    _step(guard, 1, 0.7)
    io.save_checkpoint({"global_step": 1}, last)
    _step(guard, 2, 0.6)  # proves step 1's weights
    io.save_checkpoint({"global_step": 2}, last)
    assert (tmp_path / "previous-last.ckpt").is_file()  # step 1 kept until step 2 is proven
    _step(guard, 3, 0.5)
    assert not (tmp_path / "previous-last.ckpt").exists()
    io.save_checkpoint({"global_step": 3}, last)
    with pytest.raises(TrainingDivergedError, match=r"at step 4 .*last.ckpt holds step 2.*diverged-step3.ckpt"):
        _step(guard, 4, float("nan"))
    assert torch.load(last, weights_only=True)["global_step"] == 2
    assert torch.load(tmp_path / "diverged-step3.ckpt", weights_only=True)["global_step"] == 3


def test_with_no_proven_checkpoint_the_diverged_one_is_set_aside_not_deleted(tmp_path: Path) -> None:
    guard, last = NanGuard(), tmp_path / "last.ckpt"
    KeepProvenCheckpointIO(TorchCheckpointIO(), guard).save_checkpoint({"global_step": 1}, last)
    with pytest.raises(TrainingDivergedError, match="no checkpoint with a finite loss was written"):
        _step(guard, 2, float("inf"))
    assert not last.exists() and (tmp_path / "diverged-step1.ckpt").is_file()


@pytest.mark.slow  # two CLI runs (~45 s)
def test_resume_from_the_kept_checkpoint_with_a_lower_learning_rate_trains_on(run_cli, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = run_cli("lightning_llm.train", *NAN_RUN, f"hydra.run.dir={run_dir}")
    assert proc.returncode == 2 and "training stopped" in proc.stderr, proc.stderr[-3000:]
    kept_step = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]

    # The checkpoint's optimizer and schedule carry lr 1e6: unless the configured one replaces it, this diverges too.
    proc = run_cli("lightning_llm.train", *NAN_RUN, "model.learning_rate=1e-4", "ckpt_path=last",
                   f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "model.learning_rate=0.0001 (the checkpoint's schedule peaked at 1e+06)" in proc.stdout
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed" and math.isfinite(results["val"]["val/loss"])
    final = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert final["global_step"] == 8 > kept_step
