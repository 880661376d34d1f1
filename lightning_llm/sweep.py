"""Sweeps that survive their jobs. In a multirun a crashing job is recorded as failed (its log, results.json,
its W&B run) and the sweep goes on; at the end one line says how many failed and the exit code is non-zero.

Hydra marks a job that raises as FAILED, but its basic sweeper then raises the first such error after the
batch and skips `on_multirun_end`, so jobs do not raise: `cli.run_or_exit` calls `record_failed_job` and the
job returns None (which our Optuna sweeper records as a failed trial)."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lightning_llm.errors import UserError
from lightning_llm.loggers import finish_wandb
from lightning_llm.results import write_failed_results

log = logging.getLogger(__name__)


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _chain(err: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    while err is not None and err not in chain:
        chain.append(err)
        err = err.__cause__
    return chain


def user_error_in(err: BaseException) -> UserError | None:
    """The UserError behind `err`, if any: Hydra's instantiate wraps errors raised in constructors."""
    return next((e for e in _chain(err) if isinstance(e, UserError)), None)


def error_line(err: BaseException) -> str:
    """The error as one line: our own message for a UserError, else the first error past Hydra's wrappers."""
    root = user_error_in(err) or next((e for e in _chain(err) if not isinstance(e, HydraException)), err)
    text = " ".join(str(root).split())
    return text if isinstance(root, UserError) else f"{type(root).__name__}: {text}"


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


@dataclass
class SweepJob:
    dir: Path
    overrides: list[str]
    results: dict[str, Any] | None  # None: no results.json (still running, or killed hard)

    @property
    def status(self) -> str:
        return (self.results or {}).get("status", "no results.json")


def sweep_jobs(sweep_dir: str | Path) -> list[SweepJob]:
    """The job directories of a multirun (those Hydra wrote .hydra/ into), in job-number order."""
    jobs = []
    for hydra_dir in Path(sweep_dir).glob("*/.hydra"):
        overrides_file, results_file = hydra_dir / "overrides.yaml", hydra_dir.parent / "results.json"
        overrides = list(OmegaConf.load(overrides_file)) if overrides_file.is_file() else []
        results = json.loads(results_file.read_text()) if results_file.is_file() else None
        jobs.append(SweepJob(hydra_dir.parent, [str(o) for o in overrides], results))
    return sorted(jobs, key=lambda j: (not j.dir.name.isdigit(), int(j.dir.name) if j.dir.name.isdigit() else 0,
                                       j.dir.name))


def sweep_overrides(sweep_dir: str | Path) -> list[str]:
    """The command-line overrides of the whole sweep (with their `a,b` / choice(...) sweeps)."""
    path = Path(sweep_dir) / "multirun.yaml"
    if not path.is_file():
        return []
    return [str(o) for o in OmegaConf.select(OmegaConf.load(path), "hydra.overrides.task", default=[])]


def swept_overrides(job_overrides: list[str], sweep_level: list[str]) -> list[str]:
    """The job's overrides minus those fixed for the whole sweep: what distinguishes this job."""
    parser = OverridesParser.create()
    # The last override of a key wins (as in Hydra): `a=1 a=1,2` sweeps a.
    is_fixed = {o.get_key_element(): not o.is_sweep_override() for o in parser.parse_overrides(sweep_level)}
    fixed = {key for key, yes in is_fixed.items() if yes}
    return [text for text, o in zip(job_overrides, parser.parse_overrides(job_overrides))
            if o.get_key_element() not in fixed]


def job_identity() -> tuple[str | None, str | None]:
    """(group, name) for experiment trackers: in a sweep the multirun directory's name and `<job>:<swept
    overrides>`; for a single run no group and its overrides; (None, None) outside Hydra."""
    if not HydraConfig.initialized():
        return None, None
    hydra_cfg = HydraConfig.get()
    overrides = [str(o) for o in hydra_cfg.overrides.task]
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None, ",".join(overrides) or None
    sweep_dir = Path(str(hydra_cfg.sweep.dir))
    swept = ",".join(swept_overrides(overrides, sweep_overrides(sweep_dir)))
    return sweep_dir.name, f"{hydra_cfg.job.num}:{swept}" if swept else str(hydra_cfg.job.num)


class SweepSummary(Callback):
    """Hydra callback (hydra.callbacks): after a multirun, one line with how many jobs failed; exit code 1 then.

    Hydra ignores what a multirun returns when choosing the exit code, and this is its last hook, so the
    callback raises SystemExit itself (Hydra's callback runner only catches Exception)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        jobs = sweep_jobs(sweep_dir)
        # Jobs without results.json are not judged: entry points other than llm-train write other files.
        failed = [j for j in jobs if j.results is not None and j.status != "completed"]
        if not failed:
            print(f"sweep: {len(jobs)} jobs completed -> {sweep_dir}")
            return
        first = failed[0]
        print(f"sweep: {len(failed)} of {len(jobs)} jobs failed (job {first.dir.name}, {first.status}: "
              f"{first.results.get('error')}) -> {sweep_dir}", file=sys.stderr)
        raise SystemExit(1)
