"""What a Hydra job knows about its sweep: whether it is in one, its identity for trackers, and the job
directories, overrides and results of a multirun (read by the sweep summary and `llm-report`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import OmegaConf


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


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
