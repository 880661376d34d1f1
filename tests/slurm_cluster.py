"""A real two-node SLURM cluster on this machine for the `slurm` tests (scripts/slurm/local_cluster.sh), and the
helpers that submit to it. Needs Debian's slurm-wlm and munge and root; .ci/run installs them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "slurm" / "local_cluster.sh"


@pytest.fixture(scope="session")
def slurm_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Start the cluster once per session; the environment that points clients at it (SLURM_CONF, sacct shim on
    PATH). Stopped at the end, even when a test fails: jobs cancelled, exactly its daemons killed."""
    missing = [tool for tool in ("slurmctld", "slurmd", "munged") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"-m slurm needs slurm-wlm and munge installed ({', '.join(missing)} not found)")
    cluster = tmp_path_factory.mktemp("slurm")
    start = subprocess.run(["bash", str(SCRIPT), "start", str(cluster), "2"], capture_output=True, text=True,
                           timeout=120)
    assert start.returncode == 0, start.stdout + start.stderr
    env = {"SLURM_CONF": str(cluster / "slurm.conf"), "PATH": f"{cluster / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1"}
    try:
        yield env
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(cluster)], timeout=180)


def slurm(env: dict[str, str], *args: str) -> str:
    return subprocess.run(list(args), env={**os.environ, **env}, capture_output=True, text=True, check=True,
                          timeout=30).stdout


def job_info(env: dict[str, str], job_id: str) -> dict[str, str]:
    """`scontrol show job` as a dict (JobState, NodeList, Restarts, ...)."""
    return dict(re.findall(r"(\w+)=(\S*)", slurm(env, "scontrol", "show", "job", "-o", job_id)))


def job_ids(sweep_dir: Path) -> list[str]:
    """The SLURM ids of a sweep's jobs, from submitit's log folders `.submitit/<id>`: `<array id>_<n>` when it
    submitted an array (several jobs), else the job's id."""
    folder = sweep_dir / ".submitit"
    names = sorted(p.name for p in folder.iterdir() if re.fullmatch(r"\d+(_\d+)?", p.name)) if folder.is_dir() else []
    tasks = [name for name in names if "_" in name]
    return sorted(tasks, key=lambda n: int(n.split("_")[1])) if tasks else names


def start_sweep(env: dict[str, str], cwd: Path, *args: str) -> subprocess.Popen:
    """`llm-train -m hydra/launcher=slurm ...` in the background (it waits for its jobs)."""
    return subprocess.Popen([sys.executable, "-m", "lightning_llm.train", "-m", "hydra/launcher=slurm", *args],
                            cwd=cwd, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(proc: subprocess.Popen, timeout: float) -> subprocess.CompletedProcess:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"sweep still running after {timeout} s:\n{out[-2000:]}\n{err[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")
