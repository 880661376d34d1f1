"""`hydra/sweeper=lightning_llm_optuna`: ask Optuna for trials, launch them as Hydra jobs, tell the results.

Resuming: with `storage` set, the study persists; running the same command again adds `n_trials` new trials
to it. The sampler's seed is offset by the number of trials already in the study, so a seeded sampler does not
replay the proposals of the first sweep; a proposal equal to a finished trial reuses that trial's value (or
failure, or pruning) instead of training again.

Several sweeps may work on one study at once (parallel sweeps, several machines): the sweeper records a heartbeat
for each trial it runs, and a trial left RUNNING whose heartbeat is older than `grace_period` (its sweep was
killed) is marked failed and queued again by the next sweep that starts; live trials of other sweeps are left
alone.

Pruning (`pruner=median|hyperband|successive_halving`): each job gets a `TrialLink` (lightning_llm/tracking/
trials.py), reports its monitored metric after every validation and stops when the pruner says so; the trial
is told PRUNED.

Parallel trials: `n_jobs` trials are launched together; with a launcher that runs them at once (joblib) each job
gets its share of the CPU threads and, with several GPUs, its own `CUDA_VISIBLE_DEVICES`.
"""

import logging
import math
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import optuna
from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, TrialState

from hydra_plugins.lightning_llm_optuna.search_space import (
    override_value,
    parse_search_space,
)
from lightning_llm.compat import failed_job_error, trial_id
from lightning_llm.runtime.job_resources import THREADS_ENV, cpu_count, gpu_count
from lightning_llm.tracking.trials import (
    PRUNED_AT,
    PRUNER_OPTIONS,
    TrialLink,
    absolute_storage,
    build_pruner,
    open_storage,
)

log = logging.getLogger(__name__)
RESULTS_FILE = "optimization_results.yaml"
_LOWER_IS_BETTER = ("loss", "ppl", "perplexity", "error")


# Plain typing (no `from __future__ import annotations`): OmegaConf reads these annotations at run time.
@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.lightning_llm_optuna.sweeper.OptunaSweeper"
    _recursive_: bool = False  # the sampler is built in sweep(), once the study's size (seed offset) is known
    metric: Optional[str] = None  # the name of what jobs return (for messages and direction=auto)
    direction: str = "auto"  # maximize | minimize | auto (minimize losses and perplexities, maximize the rest)
    study_name: Optional[str] = None
    storage: Optional[str] = None  # e.g. sqlite:///study.db; null = in memory, gone after the sweep
    n_trials: int = 20  # new trials per invocation
    n_jobs: int = 1  # trials launched together (run at once by parallel launchers: joblib, submitit)
    pruner: Optional[str] = None  # none | median | hyperband | successive_halving
    # The pruner's arguments (Optuna's defaults where null): n_startup_trials, n_warmup_steps, min_resource, ...
    pruner_options: Dict[str, Any] = field(default_factory=lambda: dict.fromkeys(PRUNER_OPTIONS))
    # Split CPU threads (and GPUs) among the n_jobs jobs running at once; null: for the joblib launcher only
    # (SLURM and submitit's local executor give each job its own resources).
    split_resources: Optional[bool] = None
    heartbeat_interval: int = 30  # seconds between heartbeats of running trials (RDB storages)
    grace_period: int = 120  # a RUNNING trial without a heartbeat for this long belongs to a dead sweep
    sampler: Dict[str, Any] = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler",
                                                              "seed": None})
    params: Dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="lightning_llm_optuna", node=OptunaSweeperConf,
                             provider="lightning_llm")


def resolve_direction(direction: str, metric: str | None) -> str:
    aliases = {"max": "maximize", "maximize": "maximize", "min": "minimize", "minimize": "minimize"}
    if direction in aliases:
        return aliases[direction]
    if direction != "auto":
        raise ValueError(f"hydra.sweeper.direction={direction!r}: use maximize, minimize or auto")
    lower_is_better = metric is not None and any(word in metric.lower() for word in _LOWER_IS_BETTER)
    return "minimize" if lower_is_better else "maximize"


def job_value(ret: JobReturn) -> tuple[float | None, str | None]:
    """(objective, None) for a usable result, else (None, why the trial failed)."""
    if ret.status == JobStatus.FAILED:
        error = failed_job_error(ret)
        return None, f"{type(error).__name__}: {error}"
    value = ret.return_value
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None, f"the job returned {value!r} (a crash, or the optimized metric is missing)"
    return (value, None) if math.isfinite(value) else (None, f"the job returned {value}")


class OptunaSweeper(Sweeper):
    def __init__(self, *, metric: str | None, direction: str, study_name: str | None, storage: str | None,
                 n_trials: int, n_jobs: int, sampler: DictConfig, params: DictConfig | None,
                 pruner: str | None = None, pruner_options: DictConfig | None = None,
                 split_resources: bool | None = None, heartbeat_interval: int = 30, grace_period: int = 120) -> None:
        self.metric = metric
        self.direction = resolve_direction(direction, metric)
        self.study_name, self.storage = study_name, absolute_storage(storage) if storage else None
        self.n_trials, self.n_jobs = int(n_trials), max(1, int(n_jobs))
        self.sampler_cfg = sampler
        self.params = params or {}
        self.pruner_name = "none" if pruner in (None, "null", "None") else str(pruner)
        self.pruner_options = dict(pruner_options or {})
        self.pruner = build_pruner(self.pruner_name, self.pruner_options)  # fails on a bad name/option now
        if self.pruner_name != "none" and not self.storage:
            raise ValueError(f"hydra.sweeper.pruner={self.pruner_name}: trials report to the study from their jobs, "
                             f"which needs hydra.sweeper.storage (e.g. sqlite:///optuna.db)")
        self.split_resources = split_resources
        self.heartbeat_interval, self.grace_period = int(heartbeat_interval), int(grace_period)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context,
                                                                task_function=task_function)

    def sweep(self, arguments: list[str]) -> list[JobReturn]:
        distributions, fixed = parse_search_space([f"{k}={v}" for k, v in self.params.items()] + arguments)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        study = self._load_study()
        print(f"optuna: study {study.study_name!r} ({self.storage or 'in memory'}), {self.direction} "
              f"{self.metric or 'the returned value'}: {len(study.trials)} trials so far, {self.n_trials} to add")

        returns: list[JobReturn] = []
        trials_here: list[FrozenTrial] = []
        slots = self._slot_overrides()
        while len(trials_here) < self.n_trials:
            batch, overrides = [], []
            while len(batch) < min(self.n_jobs, self.n_trials - len(trials_here)):
                trial = study.ask(distributions)
                self._beat([trial])
                earlier = None if "retry_of" in trial.user_attrs else _same_params(study, trial)
                if earlier is not None:
                    print(f"optuna: trial {trial.number} repeats trial {earlier.number}: {_REUSED[earlier.state]}")
                    trial.set_user_attr("copied_from", earlier.number)
                    trials_here.append(study.tell(trial, earlier.value) if earlier.state == TrialState.COMPLETE
                                       else study.tell(trial, state=earlier.state))
                    continue
                overrides.append([*fixed, *(f"{k}={override_value(v)}" for k, v in trial.params.items()),
                                  *self._link_overrides(study, trial), *slots[len(batch)]])
                batch.append(trial)
            if not batch:
                continue
            try:
                with self._heartbeats(batch):
                    results = self.launcher.launch(overrides, initial_job_idx=len(returns))
            except BaseException:  # e.g. an override that does not compose: no trial may stay RUNNING
                for trial in batch:
                    study.tell(trial, state=TrialState.FAIL)
                raise
            for trial, ret in zip(batch, results):
                trials_here.append(self._tell(study, trial, ret))
            returns.extend(results)
        self._write_results(study, trials_here, sweep_dir)
        return returns

    def _load_study(self) -> optuna.Study:
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        self.rdb = open_storage(self.storage, heartbeat_interval=self.heartbeat_interval,
                                grace_period=self.grace_period, heartbeat_stale_trial_callback=_queue_again) \
            if self.storage else None
        study = optuna.create_study(study_name=self.study_name, storage=self.rdb, direction=self.direction,
                                    pruner=self.pruner, load_if_exists=True)
        if study.direction.name.lower() != self.direction:
            raise ValueError(f"study {study.study_name!r} was created to {study.direction.name.lower()}; "
                             f"hydra.sweeper.direction={self.direction} needs a new study_name")
        optuna.storages.fail_stale_trials(study)  # trials of killed sweeps; other live sweeps keep theirs
        study.sampler = self._sampler(offset=len(study.trials))
        return study

    def _beat(self, trials: list[optuna.Trial]) -> None:
        if self.rdb is not None:
            for trial in trials:
                self.rdb.record_heartbeat(trial_id(trial))

    @contextmanager
    def _heartbeats(self, trials: list[optuna.Trial]) -> Iterator[None]:
        """Heartbeats for the launched trials while their jobs run (Optuna's own thread belongs to
        `study.optimize`, which a sweeper that launches jobs cannot use)."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.heartbeat_interval):
                self._beat(trials)

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def _link_overrides(self, study: optuna.Study, trial: optuna.Trial) -> list[str]:
        """What the job needs to report to its trial (and be pruned); nothing for an in-memory study."""
        if not self.storage:
            return []
        link = TrialLink(self.storage, study.study_name, trial_id(trial), trial.number, self.direction,
                         self.pruner_name, self.pruner_options)
        return [link.env_override()]

    def _slot_overrides(self) -> list[list[str]]:
        """Per position in a batch: the environment of a job that runs at the same time as n_jobs - 1 others."""
        split = self.split_resources
        if split is None:
            split = "joblib" in str(OmegaConf.select(self.config, "hydra.launcher._target_", default="")).lower()
        if not split or self.n_jobs == 1:
            return [[] for _ in range(self.n_jobs)]
        threads, gpus = max(1, cpu_count() // self.n_jobs), gpu_count()
        slots = []
        for i in range(self.n_jobs):
            env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, THREADS_ENV: threads}
            if gpus > 1:  # several GPUs: a share each (round robin when there are more jobs than GPUs)
                per_job = max(1, gpus // self.n_jobs)
                ids = range(i * per_job, (i + 1) * per_job) if gpus >= self.n_jobs else [i % gpus]
                env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, ids))
            slots.append([f"++hydra.job.env_set.{k}={override_value(str(v))}" for k, v in env.items()])
        print(f"optuna: {self.n_jobs} jobs at once, {threads} CPU thread(s) each"
              + (f", GPUs {[s[-1].split('=', 1)[1] for s in slots]}" if gpus > 1 else ""))
        return slots

    def _sampler(self, offset: int) -> optuna.samplers.BaseSampler:
        target = str(self.sampler_cfg.get("_target_", ""))
        if not target.startswith("optuna.samplers."):
            raise ValueError(f"hydra.sweeper.sampler._target_={target!r}: only optuna.samplers.* are allowed")
        seed = self.sampler_cfg.get("seed")
        # A seeded sampler restarted on a resumed study would propose its first trials again.
        return instantiate(self.sampler_cfg, **({"seed": int(seed) + offset} if seed is not None else {}))

    def _tell(self, study: optuna.Study, trial: optuna.Trial, ret: JobReturn) -> FrozenTrial:
        job_dir = str(ret.hydra_cfg.hydra.runtime.output_dir) if ret.hydra_cfg else None
        trial.set_user_attr("job_dir", job_dir)
        if ret.status != JobStatus.FAILED and self.rdb is not None and \
                self.rdb.get_trial(trial_id(trial)).user_attrs.get(PRUNED_AT) is not None:  # set by the job
            return study.tell(trial, state=TrialState.PRUNED)
        value, error = job_value(ret)
        if error is None:
            return study.tell(trial, value)
        trial.set_user_attr("error", error)
        log.warning(f"optuna: trial {trial.number} failed ({error}); job dir {job_dir}")
        return study.tell(trial, state=TrialState.FAIL)

    def _write_results(self, study: optuna.Study, trials: list[FrozenTrial], sweep_dir: Path) -> None:
        """Best trial of the whole study (earlier sweeps included) + this sweep's trials, as YAML, and printed."""
        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        best = study.best_trial if completed else None
        counts = {f"n_{state.name.lower()}": sum(t.state == state for t in trials)
                  for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
        summary = {
            "study_name": study.study_name, "storage": self.storage, "metric": self.metric,
            "direction": self.direction, "n_trials_in_study": len(study.trials), "pruner": self.pruner_name,
            **counts,
            "best_trial": best.number if best else None, "best_value": best.value if best else None,
            "best_params": best.params if best else None, "best_job_dir": best.user_attrs.get("job_dir") if best
            else None,
            "trials": [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
                        **t.user_attrs} for t in trials],
        }
        OmegaConf.save(OmegaConf.create(summary), sweep_dir / RESULTS_FILE)
        print(f"optuna: this sweep ran {len(trials)} trials: {counts['n_complete']} completed, {counts['n_pruned']} "
              f"pruned, {counts['n_fail']} failed")
        if best is None:
            print(f"optuna: no completed trial in study {study.study_name!r} -> {sweep_dir / RESULTS_FILE}")
            return
        params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={override_value(v)}"
                          for k, v in best.params.items())
        print(f"optuna: best of {len(study.trials)} trials is #{best.number}: {self.metric or 'value'}="
              f"{best.value:.6g} with {params} -> {sweep_dir / RESULTS_FILE}")


_REUSED = {TrialState.COMPLETE: "reusing its value", TrialState.FAIL: "failed again, not run",
           TrialState.PRUNED: "pruned again, not run"}


def _queue_again(study: optuna.Study, stale: FrozenTrial) -> None:
    """Heartbeat-stale trial (its sweep died; Optuna has marked it failed): run its parameters again."""
    print(f"optuna: trial {stale.number} was left running by an interrupted sweep: failed, queued again")
    study.enqueue_trial(stale.params, user_attrs={"retry_of": stale.number})


def _same_params(study: optuna.Study, trial: optuna.Trial) -> FrozenTrial | None:
    """A finished (completed, pruned or failed) trial with exactly these parameters: Optuna's recipe for not
    evaluating a point twice. Failed points are not retried either (a bad combination fails again); a trial
    interrupted by a killed sweep is the exception (queued with `retry_of`)."""
    for earlier in study.get_trials(deepcopy=False, states=tuple(_REUSED)):
        if earlier.params == trial.params and earlier.number != trial.number:
            return earlier
    return None
