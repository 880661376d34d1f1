"""Checkpoints are written straight to disk, atomically: a failed save leaves the previous file intact."""

from __future__ import annotations

import threading
import zipfile
from pathlib import Path

import pytest
import torch

from lightning_llm.runtime.builders import build_trainer
from lightning_llm.runtime.checkpoint_io import DirectCheckpointIO


def test_save_replaces_the_file_and_a_failed_save_keeps_the_old_one(tmp_path: Path) -> None:
    io, path = DirectCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.arange(4)}, path)
    io.save_checkpoint({"global_step": 2, "w": torch.arange(8)}, path)
    assert torch.load(path, weights_only=True)["global_step"] == 2
    with pytest.raises(Exception):  # a lock cannot be pickled: torch.save fails half-way
        io.save_checkpoint({"global_step": 3, "w": torch.arange(8), "bad": threading.Lock()}, path)
    assert torch.load(path, weights_only=True)["global_step"] == 2
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no partial file left behind


def test_the_trainer_writes_checkpoints_directly(compose_cfg) -> None:
    cfg = compose_cfg(["trainer.max_epochs=1"])
    trainer = build_trainer(cfg, loggers=[], callbacks=[])
    assert type(trainer.strategy.checkpoint_io) is DirectCheckpointIO


def test_records_are_written_as_torch_writes_them_and_load_the_same(tmp_path: Path) -> None:
    """No process-wide torch setting is touched: the zip records carry their CRC-32s and pass a zip check."""
    io, path = DirectCheckpointIO(), tmp_path / "last.ckpt"
    weights = torch.randn(64, 64)
    io.save_checkpoint({"global_step": 5, "w": weights}, path)
    assert zipfile.ZipFile(path).testzip() is None
    assert any(record.CRC != 0 for record in zipfile.ZipFile(path).infolist())
    loaded = torch.load(path, weights_only=True)
    assert loaded["global_step"] == 5 and torch.equal(loaded["w"], weights)
    assert not list(tmp_path.glob(".last.ckpt.partial-*"))
