"""Sweeps that survive their jobs. In a multirun a crashing job is recorded as failed (its log, results.json,
its W&B run) and the sweep goes on; at the end one line says how many failed and the exit code is non-zero.

Hydra marks a job that raises as FAILED, but its basic sweeper then raises the first such error after the
batch and skips `on_multirun_end`, so jobs do not raise: `cli.run_or_exit` calls `record_failed_job` and the
job returns None (which our Optuna sweeper records as a failed trial)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from lightning_llm.errors import error_line, user_error_in
from lightning_llm.runtime.results import write_failed_results
from lightning_llm.tracking.jobs import sweep_jobs
from lightning_llm.tracking.keep import keep_best
from lightning_llm.tracking.loggers import finish_wandb

log = logging.getLogger(__name__)


def record_failed_job(cfg: DictConfig, err: Exception) -> None:
    """A job of a sweep crashed: error (with traceback unless it is a UserError) in the job log, a failed
    results.json, the W&B run finished as failed."""
    line = error_line(err)
    log.error(f"job failed: {line}", exc_info=None if user_error_in(err) else err)
    output_dir = OmegaConf.select(cfg, "paths.output_dir")
    if output_dir:
        results_file = Path(output_dir) / "results.json"
        status = json.loads(results_file.read_text()).get("status") if results_file.is_file() else None
        if status in (None, "running", "completed", "failed"):  # keep a more specific one, e.g. "diverged"
            write_failed_results(cfg, line)
    finish_wandb(exit_code=1)


class SweepSummary(Callback):
    """Hydra callback (hydra.callbacks): after a multirun, `sweep_keep=best` applied (only the best trial keeps its
    checkpoints and export, see `tracking.keep`), then one line with how many jobs failed; exit code 1 then.

    Hydra ignores what a multirun returns when choosing the exit code, and this is its last hook, so the
    callback raises SystemExit itself (Hydra's callback runner only catches Exception)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        jobs = sweep_jobs(sweep_dir)
        if OmegaConf.select(config, "sweep_keep", default="all") == "best":  # entry points without the key: all
            print(keep_best(jobs, str(OmegaConf.select(config, "hydra.sweeper.direction", default="auto"))))
        # Jobs without results.json are not judged: entry points other than llm-train write other files.
        # A trial stopped by the Optuna pruner is an outcome of the search, not a failure.
        failed = [j for j in jobs if j.results is not None and j.status not in ("completed", "pruned")]
        pruned = sum(j.status == "pruned" for j in jobs)
        if not failed:
            print(f"sweep: {len(jobs)} jobs completed{f' ({pruned} pruned)' if pruned else ''} -> {sweep_dir}")
            return
        first = failed[0]
        print(f"sweep: {len(failed)} of {len(jobs)} jobs failed (job {first.dir.name}, {first.status}: "
              f"{first.results.get('error')}) -> {sweep_dir}", file=sys.stderr)
        raise SystemExit(1)
