"""`hydra/sweeper=lightning_llm_optuna`: ask Optuna for trials, launch them as Hydra jobs, tell the results.

Resuming: with `storage` set, the study persists; running the same command again adds `n_trials` new trials
to it. The sampler's seed is offset by the number of trials already in the study, so a seeded sampler does not
replay the proposals of the first sweep; a proposal equal to a finished trial reuses that trial's value (or
failure) instead of training again; trials left RUNNING by a killed sweep are marked failed and queued again.
One sweep process per study at a time (the RUNNING clean-up assumes nobody else is working on it).
"""

import logging
import math
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
from lightning_llm.compat import failed_job_error

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
    n_jobs: int = 1  # trials launched together (useful with parallel launchers)
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
                 n_trials: int, n_jobs: int, sampler: DictConfig, params: DictConfig | None) -> None:
        self.metric = metric
        self.direction = resolve_direction(direction, metric)
        self.study_name, self.storage = study_name, storage
        self.n_trials, self.n_jobs = int(n_trials), max(1, int(n_jobs))
        self.sampler_cfg = sampler
        self.params = params or {}

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
        while len(trials_here) < self.n_trials:
            batch, overrides = [], []
            while len(batch) < min(self.n_jobs, self.n_trials - len(trials_here)):
                trial = study.ask(distributions)
                earlier = None if "retry_of" in trial.user_attrs else _same_params(study, trial)
                if earlier is not None:
                    outcome = "reusing its value" if earlier.state == TrialState.COMPLETE else "failed again, not run"
                    print(f"optuna: trial {trial.number} repeats trial {earlier.number}: {outcome}")
                    trial.set_user_attr("copied_from", earlier.number)
                    trials_here.append(study.tell(trial, earlier.value) if earlier.state == TrialState.COMPLETE
                                       else study.tell(trial, state=TrialState.FAIL))
                    continue
                batch.append(trial)
                overrides.append([*fixed, *(f"{k}={override_value(v)}" for k, v in trial.params.items())])
            if not batch:
                continue
            try:
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
        if self.storage and self.storage.startswith("sqlite:///"):
            Path(self.storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        study = optuna.create_study(study_name=self.study_name, storage=self.storage, direction=self.direction,
                                    load_if_exists=True)
        if study.direction.name.lower() != self.direction:
            raise ValueError(f"study {study.study_name!r} was created to {study.direction.name.lower()}; "
                             f"hydra.sweeper.direction={self.direction} needs a new study_name")
        for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            print(f"optuna: trial {stale.number} was left running by an interrupted sweep: failed, queued again")
            study.tell(stale.number, state=TrialState.FAIL)
            study.enqueue_trial(stale.params, user_attrs={"retry_of": stale.number})
        study.sampler = self._sampler(offset=len(study.trials))
        return study

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
        summary = {
            "study_name": study.study_name, "storage": self.storage, "metric": self.metric,
            "direction": self.direction, "n_trials_in_study": len(study.trials),
            "best_trial": best.number if best else None, "best_value": best.value if best else None,
            "best_params": best.params if best else None, "best_job_dir": best.user_attrs.get("job_dir") if best
            else None,
            "trials": [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
                        **t.user_attrs} for t in trials],
        }
        OmegaConf.save(OmegaConf.create(summary), sweep_dir / RESULTS_FILE)
        if best is None:
            print(f"optuna: no completed trial in study {study.study_name!r} -> {sweep_dir / RESULTS_FILE}")
            return
        params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={override_value(v)}"
                          for k, v in best.params.items())
        print(f"optuna: best of {len(study.trials)} trials is #{best.number}: {self.metric or 'value'}="
              f"{best.value:.6g} with {params} -> {sweep_dir / RESULTS_FILE}")


def _same_params(study: optuna.Study, trial: optuna.Trial) -> FrozenTrial | None:
    """A finished (completed or failed) trial with exactly these parameters: Optuna's recipe for not
    evaluating a point twice. Failed points are not retried either (a bad combination fails again); a trial
    interrupted by a killed sweep is the exception (queued with `retry_of`)."""
    for earlier in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        if earlier.params == trial.params and earlier.number != trial.number:
            return earlier
    return None
