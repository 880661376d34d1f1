"""End a command's process without the interpreter's teardown, once its outputs are on disk."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import NoReturn

from lightning_llm import compat
from lightning_llm.runtime import allocator


def as_process(main: Callable[[], object]) -> Callable[[], NoReturn]:
    """`main` as its own process (the console scripts, lightning_llm/console_scripts.py, and `python -m`): malloc
    keeps freed memory for reuse (runtime/allocator.py), then `exit_without_teardown(main)`. `main` itself stays an
    ordinary function that returns or raises `SystemExit`, which tests call in-process."""

    def run() -> NoReturn:
        allocator.keep_freed_memory()
        exit_without_teardown(main)

    run.__doc__ = f"`{main.__module__}.main` as its own process (runtime/process_exit.py)."
    return run


def exit_without_teardown(entry: Callable[[], object]) -> NoReturn:
    """Run `entry` (an entry point's `main`), then end the process as Python would, minus its teardown.

    Why: with torch, transformers and Lightning imported, Python's finalisation (clearing every module and freeing
    its objects) takes ~1.4 s on 2 CPU cores after the results are written: `python -c "import lightning_llm.train"`
    takes 6.9 s, and 5.5 s when it ends this way. Everything else Python does at exit still happens, in its order:
    `threading`'s exit hooks and the join of non-daemon threads, the `atexit` handlers (logging, W&B,
    multiprocessing and joblib pools, `weakref.finalize` temp-dir cleanup), the flush of stdout and stderr. Only
    `SystemExit` (the normal end, or `sys.exit(2)` after a one-line error) takes this path; any other exception
    propagates with Python's usual traceback and exit code."""
    try:
        entry()
        code: object = 0
    except SystemExit as stop:
        code = stop.code
    compat.run_exit_hooks()
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)  # sys.exit("message"): printed, status 1, as Python does
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or a broken pipe: nothing more can be written to it anyway
            pass
    os._exit(code or 0)
