"""A diverging run stops at the first NaN loss, says at which step, keeps the last good checkpoint and reports a
failed status instead of metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lightning_llm.callbacks import NanGuard
from lightning_llm.errors import TrainingDivergedError
from tests.conftest import TINY_BERT


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(run_cli, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = run_cli("lightning_llm.train", *TINY_BERT, "model.learning_rate=1e6", "trainer.max_epochs=1",
                   "++trainer.limit_train_batches=8", "++trainer.limit_val_batches=2", "data.batch_size=8",
                   "callbacks.step_checkpoint.every_n_train_steps=1", "callbacks.rich_progress_bar=null",
                   "logger=csv", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    match = re.search(r"^error: train/loss is not finite \(NaN/inf\) at step (\d+)", proc.stderr, re.MULTILINE)
    assert match, proc.stderr[-3000:]
    nan_step = int(match[1])
    assert nan_step >= 2  # an lr of 1e6 needs a step or two (after warmup) to blow up

    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "diverged" and f"at step {nan_step}" in results["error"]
    assert results["optimized_metric"]["value"] is None and "val" not in results and "test" not in results
    assert not (run_dir / "hf_model").exists()

    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == nan_step - 1  # saved every step, but not the broken one
    assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values())


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
