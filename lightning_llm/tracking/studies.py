"""The optimisation history behind sweep directories, for `llm-report`. A job of a stored Optuna study names its
trial (the sweeper's `TrialLink`, kept in the job's .hydra/hydra.yaml), so the report reads the study itself:
every trial once, numbered as Optuna numbers them, however many sweep directories (restarts, concurrent sweeps)
its jobs ran in, plus Optuna's parameter importances. Jobs outside a stored study (grid sweeps, in-memory
studies) make a history of their own, in job order."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState

from lightning_llm.tracking.jobs import SweepJob
from lightning_llm.tracking.trials import TrialLink, open_storage

STATES = {TrialState.COMPLETE: "completed", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}
STATE_ORDER = ("completed", "pruned", "failed", "unfinished")  # unfinished: running, waiting, no results.json
MIN_COMPLETED = 2  # PED-ANOVA's own minimum: with fewer, Optuna warns and returns equal importances


@dataclass
class Point:
    """One trial (or job) of a history."""

    number: int
    state: str  # one of STATE_ORDER
    value: float | None  # a pruned trial's last reported value; None for failed/unfinished ones
    best: float | None = None  # the best completed value up to this one (pruned values do not count)


@dataclass
class History:
    title: str  # "study <name>" or "jobs"
    direction: str  # maximize | minimize
    points: list[Point]
    study: optuna.Study | None = None
    storage: str | None = None
    in_sweeps: int = 0  # trials of the study whose jobs are in the reported sweep directories
    notes: list[str] = field(default_factory=list)

    def counts(self) -> str:
        counts = Counter(p.state for p in self.points)
        return ", ".join(f"{counts[s]} {s}" for s in STATE_ORDER if counts[s])


def with_best_so_far(points: list[Point], direction: str) -> list[Point]:
    """Fill in `best`, as Optuna's optimisation history does: completed trials only."""
    pick = max if direction == "maximize" else min
    best = None
    for point in points:
        if point.state == "completed" and point.value is not None:
            best = point.value if best is None else pick(best, point.value)
        point.best = best
    return points


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def load_study(link: TrialLink) -> optuna.Study | str:
    """The study a job's link names, or why it cannot be read (the database moved, the study was deleted)."""
    if link.storage.startswith("sqlite:///") and not Path(link.storage.removeprefix("sqlite:///")).is_file():
        return f"{link.storage}: no such database (moved or deleted?)"
    try:
        return optuna.load_study(study_name=link.study_name, storage=open_storage(link.storage),
                                 sampler=optuna.samplers.RandomSampler())  # nothing is sampled here
    except KeyError:
        return f"no study {link.study_name!r} in {link.storage}"


def study_history(study: optuna.Study, storage: str, in_sweeps: int) -> History:
    points = [Point(t.number, STATES.get(t.state, "unfinished"), _finite(t.value))
              for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)]
    direction = study.direction.name.lower()
    return History(f"study {study.study_name}", direction, with_best_so_far(points, direction), study, storage,
                   in_sweeps)


def job_history(jobs: list[tuple[SweepJob, float | None]], direction: str, notes: list[str]) -> History:
    """Jobs in the order given, numbered from 0; a pruned job's value is what it had reached."""
    points = []
    for number, (job, value) in enumerate(jobs):
        state = job.status if job.status in STATE_ORDER[:3] else "unfinished"
        points.append(Point(number, state, _finite(value) if state in ("completed", "pruned") else None))
    return History("jobs", direction, with_best_so_far(points, direction), notes=notes)


def histories(jobs: list[tuple[SweepJob, float | None]], direction: str) -> list[History]:
    """One history per stored study the jobs belong to (each trial once), then one of the other jobs.
    `jobs`: (job, its value of the report's metric), in sweep and job order."""
    studies: dict[tuple[str, str], optuna.Study | str] = {}
    trials: dict[tuple[str, str], set[int]] = {}
    rest, notes = [], []
    for job, value in jobs:
        link = TrialLink.from_job_dir(job.dir)
        key = (link.storage, link.study_name) if link else None
        if key and key not in studies:
            studies[key] = load_study(link)
            if isinstance(studies[key], str):
                notes.append(f"study {link.study_name!r} not read ({studies[key]}): its jobs are shown in job order")
        if key and not isinstance(studies[key], str):
            trials.setdefault(key, set()).add(link.number)
        else:
            rest.append((job, value))
    found = [study_history(study, key[0], len(trials[key])) for key, study in studies.items()
             if not isinstance(study, str)]
    return found + ([job_history(rest, direction, notes)] if rest else [])


def importances(study: optuna.Study) -> tuple[dict[str, float], str | None]:
    """Optuna's parameter importances (PED-ANOVA, named explicitly: the default of Optuna 4, fANOVA, needs
    scikit-learn), or, when there is nothing to compute them from, why not in one line."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    params = list(dict.fromkeys(k for t in done for k in t.params))
    if len(done) < MIN_COMPLETED:
        return {}, f"no parameter importances: {len(done)} completed trial(s), Optuna needs {MIN_COMPLETED}"
    if len(params) < 2:
        return {}, "no parameter importances: " + (f"only {params[0]} was searched" if params else "no parameters")
    if len({t.value for t in done}) == 1:
        return {}, f"no parameter importances: all {len(done)} completed trials have the same value"
    with warnings.catch_warnings():  # experimental-feature notices
        warnings.simplefilter("ignore")
        found = optuna.importance.get_param_importances(study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    return dict(found), None
