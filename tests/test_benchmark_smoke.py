"""`python -m scripts.bench.run` runs every benchmark end to end (tiny sizes, one round), from the repository root
as a user runs it: the code works and the two sides of each comparison compute the same thing. Speed is not
asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

EXPECTED = {"B1", "B2", "B3", "B3-cache", "B4-clm", "B4-mlm", "B4-cls", "B5", "B5-cache"}


def test_benchmark_all_smoke(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "-m", "scripts.bench.run", "all", "--smoke", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = {r["name"]: r for r in json.loads(out.read_text())}
    assert set(results) == EXPECTED
    for name, r in results.items():
        assert r["parity"].startswith(("ok", "n/a")), (name, r["parity"])
        assert r["ratio"] is None or r["ratio"] > 0, name
    assert results["B4-clm"]["ratio"] == results["B4-mlm"]["ratio"] == 1.0  # packed blocks carry no padding
    assert "| benchmark | measures | ours | baseline |" in proc.stdout


@pytest.mark.slow  # six fresh processes (each side of B6, B7, B8 imports torch, transformers...): ~2 min on 2 cores
def test_real_shape_benchmarks_smoke(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "-m", "scripts.bench.run", "b6", "b7", "b8", "--smoke", "--json", str(out)],
                          capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = {r["name"]: r for r in json.loads(out.read_text())}
    assert set(results) == {"B6", "B6-step", "B7", "B7-step", "B8", "B8-step"}
    for name, r in results.items():
        assert r["parity"].startswith("ok"), (name, r["parity"])  # same losses on both sides (masks included)
        assert r["ratio"] > 0, name
