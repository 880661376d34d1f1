"""`sweep_keep=best|all`: what the finished trials of a multirun keep once the sweep is over.

Every trial writes `checkpoints/` (best + last) and `hf_model/`: gigabytes per trial at BERT-base size. With
`best`, the sweep summary (`SweepSummary.on_multirun_end`, which runs once every job of the sweep has returned,
whatever the launcher) removes those heavy files from every trial that is known not to be the best of its sweep
directory, by the jobs' `optimized_metric` in the sweep's direction. Only outcomes are judged: a completed trial
with a finite value worse than the best, and a trial the Optuna pruner stopped. Failed, diverged, preempted,
interrupted or still-running trials and those without results.json keep everything (someone may debug or resume
them), and so does every trial tied with the best. Pruning at the end rather than while the sweep runs means no job
can lose files while another process is still using them (a resumed trial, a parallel launcher)."""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_llm.tracking.jobs import SweepJob
from lightning_llm.utils.io import write_json_atomic

KEEP_CHOICES = ("best", "all")
REMOVED_KEY = "checkpoints_removed"  # results.json field of a trial whose heavy files were removed
HEAVY_DIRS = ("checkpoints", "hf_model", "hf_adapter")
HEAVY_GLOBS = ("hpc_ckpt_*.ckpt",)  # what Lightning's SLURM requeue saves in the run directory
PATH_FIELDS = ("best_checkpoint", "last_checkpoint", "hf_model")  # results.json paths that no longer exist after


@dataclass
class KeepPlan:
    """What `sweep_keep=best` does to one sweep directory."""

    metric: str | None
    direction: str
    best: list[SweepJob] = field(default_factory=list)  # the best value (several when tied): kept
    remove: list[SweepJob] = field(default_factory=list)
    why_nothing: str | None = None  # why nothing is removed, when nothing is


def _value(job: SweepJob) -> float | None:
    value = ((job.results or {}).get("optimized_metric") or {}).get("value")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def plan_keep(jobs: list[SweepJob], direction: str) -> KeepPlan:
    """Which trials keep their checkpoints: the completed ones with the best finite `optimized_metric` value;
    `direction` is "maximize", "minimize" or "auto" (by the metric's name, as the Optuna sweeper decides)."""
    from hydra_plugins.lightning_llm_optuna.sweeper import resolve_direction  # the sweeper's own rule

    live = [j for j in jobs if j.results is not None and REMOVED_KEY not in j.results]  # not already removed
    names = {((j.results or {}).get("optimized_metric") or {}).get("name") for j in live if j.status == "completed"}
    names.discard(None)
    metric = next(iter(names)) if len(names) == 1 else None
    plan = KeepPlan(metric, resolve_direction(direction, metric) if metric else direction)
    if len(names) > 1:
        plan.why_nothing = f"the trials optimize different metrics ({', '.join(sorted(names))})"
        return plan
    scored = [(j, _value(j)) for j in live if j.status == "completed" and _value(j) is not None]
    if not scored:
        plan.why_nothing = "no completed trial with a finite optimized_metric"
        return plan
    pick = max if plan.direction == "maximize" else min
    best_value = pick(v for _, v in scored)
    plan.best = [j for j, v in scored if v == best_value]
    plan.remove = [j for j, v in scored if v != best_value] + [j for j in live if j.status == "pruned"]
    plan.remove.sort(key=jobs.index)
    return plan


def heavy_paths(job_dir: Path) -> list[Path]:
    """The checkpoints and exports of a run directory (symbolic links are not followed, nor removed)."""
    found = [job_dir / name for name in HEAVY_DIRS if (job_dir / name).is_dir()]
    found += sorted(p for pattern in HEAVY_GLOBS for p in job_dir.glob(pattern) if p.is_file())
    return [p for p in found if not p.is_symlink()]


def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def remove_heavy_files(job: SweepJob, best: SweepJob) -> int:
    """Record in the job's results.json what goes and why (first: a crash in between leaves files that
    results.json calls removed, never the reverse), then remove it. Returns the bytes freed."""
    paths = heavy_paths(job.dir)
    freed = sum(size_of(p) for p in paths)
    results: dict[str, Any] = dict(job.results or {})
    results[REMOVED_KEY] = {"by": "sweep_keep=best", "best_job": best.dir.name, "best_dir": str(best.dir),
                            "removed": [p.name + ("/" if p.is_dir() else "") for p in paths], "bytes": freed}
    results.update({key: None for key in PATH_FIELDS if key in results})
    write_json_atomic(job.dir / "results.json", results)
    job.results = results
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    return freed


def human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def keep_best(jobs: list[SweepJob], direction: str) -> str:
    """Apply `sweep_keep=best` to a sweep's jobs; the line to print. A file that cannot be removed (permissions)
    is named in the line and the other trials are still pruned."""
    plan = plan_keep(jobs, direction)
    if plan.why_nothing:
        return f"sweep_keep=best: {plan.why_nothing}; every trial keeps its checkpoints"
    freed, errors = 0, []
    for job in plan.remove:
        try:
            freed += remove_heavy_files(job, plan.best[0])
        except OSError as err:
            errors.append(f"job {job.dir.name}: {err}")
    kept = ", ".join(j.dir.name for j in plan.best)
    line = (f"sweep_keep=best: job{'s' if len(plan.best) > 1 else ''} {kept} ({plan.metric}="
            f"{_value(plan.best[0]):.6g}) keep{'' if len(plan.best) > 1 else 's'} checkpoints and hf_model/; "
            f"removed from {len(plan.remove) - len(errors)} other trial(s), {human_bytes(freed)} freed")
    if errors:
        line += f"; not removed: {'; '.join(errors)}"
    return line
