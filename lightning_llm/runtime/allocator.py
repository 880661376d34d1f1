"""glibc malloc settings for a command's process: freed memory stays in the process for the next step.

Why: by default glibc hands every allocation above a threshold (128 KB, rising with use to at most 32 MB) to the
kernel as its own mapping and unmaps it when freed, and gives the top of the heap back once 2x that is free. A
training step frees and re-allocates the same activations, gradients and temporaries every time, so each step
page-faulted fresh zeroed memory for them again (figures: docs/benchmarks.md). Set by `llm-train` and `llm-eval` at
their start only (never on import); a user's MALLOC_*_ variables or glibc.malloc tunables win."""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc malloc.h
MMAP_THRESHOLD = 256 * 2**20  # allocations up to this size come from the heap and are reused
TRIM_THRESHOLD = 2**30  # free memory kept at the top of the heap before any is given back
# The user's own malloc settings win.
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (fixed values also stop their adjustment at run time); False where
    this is not glibc on Linux or the user configured malloc (MALLOC_*_ variables, glibc.malloc tunables)."""
    if not sys.platform.startswith("linux") or any(name in os.environ for name in _USER_SETTINGS) \
            or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries: their allocator, their defaults
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
