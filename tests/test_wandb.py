"""W&B without a key: one offline run per sweep job, grouped by the sweep, named by the swept overrides,
holding that job's metrics and resolved config, no secret; the run id is kept for resumed jobs."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from wandb.proto import wandb_internal_pb2

from lightning_llm.config.secrets import REDACTED
from lightning_llm.tracking.loggers import (
    WANDB_ID_FILE,
    finish_wandb,
    make_wandb_logger,
)
from tests.test_sweeps import TINY_JOB

SECRET = "hf_test-secret-value-1234567890"


def wandb_records(path: Path) -> Iterator[Any]:
    """Records of a .wandb transaction log (LevelDB log format: 32 KiB blocks of [crc32 u32, length u16,
    type u8] + chunk; type FULL=1, FIRST=2, MIDDLE=3, LAST=4), as wandb_internal_pb2.Record messages.
    wandb 0.31 ships no Python reader (its core is in Go), so the test reads the documented format itself."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4) and pending:
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def read_offline_run(run_dir: Path) -> dict[str, Any]:
    """What an offline run holds: run metadata, merged config and summary, exit code."""
    (log,) = run_dir.glob("run-*.wandb")
    run: dict[str, Any] = {"config": {}, "summary": {}}
    for record in wandb_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.update(id=record.run.run_id, group=record.run.run_group, job_type=record.run.job_type,
                       name=record.run.display_name)
        elif kind == "config":
            run["config"].update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "summary":
            run["summary"].update({"/".join(item.nested_key) or item.key: json.loads(item.value_json)
                                   for item in record.summary.update})
        elif kind == "exit":
            run["exit_code"] = record.exit.exit_code
    return run


@pytest.mark.slow  # a CLI end-to-end run (~15-45 s on 2 cores)
def test_wandb_sweep_gives_one_offline_run_per_job(run_cli, tmp_path: Path, monkeypatch) -> None:
    env = {"HF_TOKEN": SECRET, "HOME": str(tmp_path / "home"), "WANDB_DIR": str(tmp_path / "home"),
           "WANDB_CONFIG_DIR": str(tmp_path / "home"), "WANDB_CACHE_DIR": str(tmp_path / "home")}
    monkeypatch.delenv("WANDB_MODE", raising=False)  # the subprocess must choose offline by itself
    proc = run_cli("lightning_llm.train", "-m", *TINY_JOB, "logger=wandb", "model.num_attention_heads=1,2",
                   "+note=${oc.env:HF_TOKEN}", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "logging offline" in proc.stdout
    (sweep_dir,) = {p.parent for p in tmp_path.glob("outputs/classification/multiruns/*/multirun.yaml")}

    runs = []
    for job, heads in (("0", 1), ("1", 2)):
        job_dir = sweep_dir / job
        (run_dir,) = (job_dir / "wandb").glob("offline-run-*")  # one run per job, nothing merged
        run = read_offline_run(run_dir)
        runs.append(run)
        assert run["id"] == (job_dir / WANDB_ID_FILE).read_text().strip()
        assert run["group"] == sweep_dir.name and run["job_type"] == "classification"  # job_type = task_name
        assert run["name"] == f"{job}:model.num_attention_heads={heads}"
        config = run["config"]  # the resolved config, this job's values
        assert config["model"]["num_attention_heads"] == heads
        assert config["paths"]["output_dir"] == str(job_dir)
        assert config["note"] == REDACTED
        summary = run["summary"]
        results = json.loads((job_dir / "results.json").read_text())
        assert summary["val/acc_best"] == results["val"]["val/acc_best"]
        assert summary["test/acc"] == results["test"]["test/acc"]
        assert summary["status"] == "completed" and run["exit_code"] == 0
    assert runs[0]["id"] != runs[1]["id"]

    leaks = [p for p in tmp_path.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert not leaks


def test_wandb_run_id_is_reused_in_the_same_run_dir_and_mode_does_not_leak(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    first = make_wandb_logger(project="p", save_dir=str(tmp_path / "run"), offline=True)
    resumed = make_wandb_logger(project="p", save_dir=str(tmp_path / "run"), offline=True)
    other = make_wandb_logger(project="p", save_dir=str(tmp_path / "other"), offline=True)
    assert first.version == resumed.version != other.version
    try:
        assert first.experiment.id == first.version  # starts the offline run
        assert "WANDB_MODE" not in os.environ  # a later job of the sweep must not inherit offline mode
    finally:
        finish_wandb()


def test_unreachable_server_means_offline_at_once(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)  # a key, but nothing listens at the server address
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr("lightning_llm.tracking.loggers._server_unreachable", False)
    logger = make_wandb_logger(project="p", save_dir=str(tmp_path / "run"))
    assert "cannot be reached: logging offline" in capsys.readouterr().out
    try:
        assert logger.experiment.settings.mode == "offline"
    finally:
        finish_wandb()
