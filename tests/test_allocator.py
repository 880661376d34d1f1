"""Commands keep freed memory for the next training step instead of unmapping it (runtime/allocator.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lightning_llm.runtime import allocator

# malloc + touch + free 64 MB (above glibc's largest automatic mmap threshold, 32 MB) and print how much of it
# the process gave back to the kernel.
_GIVEN_BACK = """
import ctypes, os, sys
from lightning_llm.runtime import allocator
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def main():
    size = 64 * 2**20
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    before = rss()
    libc.free(block)
    print((before - rss()) / size)

if sys.argv[1] == "tuned":
    assert allocator.keep_freed_memory()
main()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
@pytest.mark.parametrize("mode", ["default", "tuned"])
def test_freed_memory_stays_in_the_process(mode: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    proc = subprocess.run([sys.executable, "-c", _GIVEN_BACK, mode], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    given_back = float(proc.stdout)
    assert given_back > 0.9 if mode == "default" else given_back < 0.1


@pytest.mark.parametrize("name, value", [("MALLOC_TRIM_THRESHOLD_", "0"),
                                         ("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536")])
def test_the_users_malloc_settings_win(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    assert allocator.keep_freed_memory() is False


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_training_and_evaluation_commands_set_it_and_no_other(monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    """Only `llm-train` and `llm-eval` (whose step loops reuse the same buffers) set the thresholds, at their start;
    importing the package sets nothing."""
    import importlib

    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(command) or True)
    module = importlib.import_module(f"lightning_llm.{command}")
    assert calls == []
    monkeypatch.setattr(sys, "argv", [f"llm-{command}", "--help"])
    with pytest.raises(SystemExit):
        module.main()
    assert calls == [command]
