"""A job's share of the machine when a sweep runs several jobs on it at once (joblib launcher).

Concurrent jobs each keeping torch's default thread pool oversubscribe the cores (docs/benchmarks.md). The sweeper
sets OMP_NUM_THREADS for the job, but a reused worker process has its torch pool already, so the job also calls
`torch.set_num_threads` with the budget. torch is imported inside the functions that need it: the Hydra sweeper
plugin imports this module when Hydra starts, in every Hydra application."""

from __future__ import annotations

import os

THREADS_ENV = "LLM_JOB_THREADS"


def cpu_count() -> int:
    """The cores this process may run on (its CPU affinity: taskset, cgroup cpusets), not the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def gpu_count() -> int:
    """GPUs visible, without creating a CUDA context in the sweeper (NVML count)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def apply_thread_budget() -> None:
    """torch's intra-op threads = the budget the sweeper gave this job (no-op outside such a sweep)."""
    threads = os.environ.get(THREADS_ENV)
    if not threads:
        return
    import torch

    if torch.get_num_threads() != int(threads):
        torch.set_num_threads(int(threads))


def oversubscription_hint(threads: int, cores: int | None = None, load: float | None = None) -> str | None:
    """One line when a CPU run's torch threads plus the machine's other work (1-minute load average) exceed its
    cores: each of torch's threads then waits for the others at every op, and a run can be several times slower than
    with one thread (docs/hardware.md). None when OMP_NUM_THREADS or a sweep's budget already decides, or when the
    cores suffice. Torch's default (one thread per core) is kept: on an idle machine it is the fastest."""
    if os.environ.get("OMP_NUM_THREADS") or os.environ.get(THREADS_ENV) or threads <= 1:
        return None
    cores = cpu_count() if cores is None else cores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:
            return None
    if load + threads <= cores + 1:
        return None
    return (f"threads: torch uses {threads} threads on {cores} cores already busy (load {load:.1f}); if this run is "
            f"slow, start it with OMP_NUM_THREADS=1 (docs/hardware.md)")
