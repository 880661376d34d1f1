"""A command ends without interpreter teardown, but with everything Python does at exit that outputs rely on."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent("""
    import atexit, sys, tempfile, threading, time, weakref
    from pathlib import Path
    from lightning_llm.runtime.process_exit import exit_without_teardown

    class Resource:
        pass

    def main():
        atexit.register(lambda: Path("atexit.txt").write_text("ran"))
        def late():
            time.sleep(0.3)
            Path("thread.txt").write_text("joined")
        threading.Thread(target=late).start()  # not a daemon: Python waits for it
        scratch = tempfile.mkdtemp(dir=".")
        Path("scratch.txt").write_text(scratch)
        resource = Resource()
        weakref.finalize(resource, __import__("shutil").rmtree, scratch)  # atexit=True: runs at exit
        sys.modules["__main__"].keep = resource
        sys.stdout.write("buffered, no newline")
        if sys.argv[1] != "return":
            sys.exit(int(sys.argv[1]) if sys.argv[1].isdigit() else sys.argv[1])

    exit_without_teardown(main)
""")


@pytest.mark.parametrize(("how", "code", "stderr"), [("return", 0, ""), ("0", 0, ""), ("2", 2, ""),
                                                      ("bad thing", 1, "bad thing\n")])
def test_exit_runs_hooks_joins_threads_flushes_and_keeps_the_code(tmp_path: Path, how: str, code: int,
                                                                  stderr: str) -> None:
    (tmp_path / "script.py").write_text(SCRIPT)
    proc = subprocess.run([sys.executable, "script.py", how], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert (proc.returncode, proc.stderr) == (code, stderr)
    assert proc.stdout == "buffered, no newline"
    assert (tmp_path / "atexit.txt").read_text() == "ran"
    assert (tmp_path / "thread.txt").read_text() == "joined"
    assert not (tmp_path / (tmp_path / "scratch.txt").read_text()).exists()


def test_other_exceptions_take_pythons_path(tmp_path: Path) -> None:
    script = SCRIPT.replace('sys.stdout.write("buffered, no newline")', 'raise RuntimeError("boom")')
    (tmp_path / "script.py").write_text(script)
    proc = subprocess.run([sys.executable, "script.py", "return"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.startswith("Traceback") and proc.stderr.rstrip().endswith("RuntimeError: boom")
    assert (tmp_path / "thread.txt").read_text() == "joined"


def test_console_script_imports_its_entry_point_with_collection_paused_then_frozen(tmp_path: Path) -> None:
    """What `llm-report` runs before `main`: the entry point imported, garbage collection back on, and the
    import-time objects frozen out of later collections."""
    code = ("import gc; from lightning_llm.console_scripts import import_entry; "
            "entry = import_entry('lightning_llm.report'); "
            "print(callable(entry.run), gc.isenabled(), gc.get_freeze_count() > 100_000)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["True", "True", "True"]
