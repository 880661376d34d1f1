"""A job's share of the machine when a sweep runs several jobs on it at once (joblib launcher).

Measured here (2 cores): two concurrent jobs each keeping torch's default thread pool ran ~4x slower than with
one thread each. The sweeper sets OMP_NUM_THREADS for the job, but a reused worker process has its torch pool
already, so the job also calls `torch.set_num_threads` with the budget."""

from __future__ import annotations

import os

import torch

THREADS_ENV = "LLM_JOB_THREADS"


def cpu_count() -> int:
    """The cores this process may run on (its CPU affinity: taskset, cgroup cpusets), not the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def gpu_count() -> int:
    """GPUs visible, without creating a CUDA context in the sweeper (NVML count)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def apply_thread_budget() -> None:
    """torch's intra-op threads = the budget the sweeper gave this job (no-op outside such a sweep)."""
    threads = os.environ.get(THREADS_ENV)
    if threads and torch.get_num_threads() != int(threads):
        torch.set_num_threads(int(threads))
