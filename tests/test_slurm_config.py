"""SLURM without a cluster (fast): what the launcher config asks SLURM for, and the one-line error promise on a
machine with `srun` on PATH (a login node). The runs on a real cluster are in test_slurm.py (`-m slurm`)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from lightning_llm.config import CONFIG_DIR


def launcher_config(*overrides: str) -> dict:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose("train", overrides=["hydra/launcher=slurm", *overrides], return_hydra_config=True)
        return {key: OmegaConf.select(cfg, f"hydra.launcher.{key}")
                for key in ("nodes", "tasks_per_node", "gpus_per_node")}
    finally:
        GlobalHydra.instance().clear()


def test_cpu_jobs_ask_for_no_gpus() -> None:
    """A CPU partition never grants a GPU: a job asking for one would stay pending forever."""
    assert launcher_config("hardware=ddp", "hardware.accelerator=cpu", "hardware.devices=1",
                           "hardware.num_nodes=2") == {"nodes": 2, "tasks_per_node": 1, "gpus_per_node": None}
    assert launcher_config("hardware=cpu")["gpus_per_node"] is None
    assert launcher_config("hardware=ddp", "hardware.devices=4") == \
        {"nodes": 1, "tasks_per_node": 4, "gpus_per_node": 4}
    assert launcher_config("hardware=gpu")["gpus_per_node"] == 1


@pytest.fixture
def srun_on_path(tmp_path: Path) -> dict[str, str]:
    """A login node: an `srun` on PATH (never run here), no SLURM job environment."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    srun.write_text("#!/bin/sh\necho 'fake srun must not run' >&2\nexit 1\n")
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def test_one_line_error_with_srun_on_path(run_cli, tmp_path: Path, srun_on_path: dict[str, str],
                                          monkeypatch) -> None:
    """Lightning warns on stderr whenever `srun` is on PATH; a user's mistake must still read as one line."""
    for name in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(name)
    proc = run_cli("lightning_llm.train", "data.max_lenght=64", f"hydra.run.dir={tmp_path / 'run'}",
                   env=srun_on_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: data.max_lenght: no such setting; did you mean data.max_length?"]
