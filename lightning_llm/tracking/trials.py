"""The link between an Optuna sweep and the training job that runs one of its trials.

The sweeper owns the study (ask/tell), so Optuna's own Lightning pruning callback (optuna_integration, which
also imports `lightning.pytorch`, not our `pytorch_lightning`) cannot be used: the sweeper hands each job a
`TrialLink` in the environment variable `LLM_OPTUNA_TRIAL` (through `hydra.job.env_set`, so it reaches the job
with every launcher: in-process, joblib workers, submitit/SLURM), and the job re-opens its trial from the
storage to report validation values and ask the pruner. Also here: the storage both sides open (sqlite waits
for locks instead of failing) and the pruners by name."""

from __future__ import annotations

import inspect
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf

from lightning_llm import compat
from lightning_llm.utils.io import write_json_atomic

TRIAL_ENV = "LLM_OPTUNA_TRIAL"
PRUNED_AT = "pruned_at_step"  # user attribute the job sets on a trial its pruner stopped
SQLITE_LOCK_TIMEOUT_S = 120  # sqlite's default (5 s) fails concurrent writers with "database is locked"

PRUNERS: dict[str, type[optuna.pruners.BasePruner]] = {
    "none": optuna.pruners.NopPruner,
    "median": optuna.pruners.MedianPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
}


# Every option of those pruners, null unless set: `hydra.sweeper.pruner_options.<name>=...` needs no `+`.
PRUNER_OPTIONS = ("n_startup_trials", "n_warmup_steps", "interval_steps", "n_min_trials", "min_resource",
                  "max_resource", "reduction_factor", "min_early_stopping_rate", "bootstrap_count")


def build_pruner(name: str | None, options: dict[str, Any] | None = None) -> optuna.pruners.BasePruner:
    """`hydra.sweeper.pruner=<name>` with the non-null `hydra.sweeper.pruner_options` as its arguments."""
    key = "none" if name in (None, "null", "None") else str(name)
    if key not in PRUNERS:
        raise ValueError(f"hydra.sweeper.pruner={name!r}: use one of {', '.join(PRUNERS)}")
    cls, given = PRUNERS[key], {k: v for k, v in (options or {}).items() if v is not None}
    accepted = set(inspect.signature(cls).parameters)
    unknown = sorted(set(given) - accepted)
    if unknown:
        raise ValueError(f"hydra.sweeper.pruner_options.{unknown[0]}: not an option of {cls.__name__} "
                         f"(pruner={key}; it takes {', '.join(sorted(accepted)) or 'none'})")
    return cls(**given)


def absolute_storage(url: str) -> str:
    """sqlite URLs with an absolute path: jobs of other launchers may run elsewhere than the sweeper."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(url.removeprefix("sqlite:///")).resolve())
    return url


def open_storage(url: str, **heartbeat: Any) -> optuna.storages.RDBStorage:
    """An RDB storage; for sqlite, writers wait up to SQLITE_LOCK_TIMEOUT_S for the lock (several sweeps or
    parallel jobs on one study). `heartbeat`: RDBStorage's heartbeat_interval, grace_period and callback."""
    engine_kwargs = {"connect_args": {"timeout": SQLITE_LOCK_TIMEOUT_S}} if url.startswith("sqlite:") else {}
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat)


@dataclass
class TrialLink:
    storage: str
    study_name: str
    trial_id: int
    number: int
    direction: str  # the study's: maximize | minimize
    pruner: str = "none"
    pruner_options: dict[str, Any] = field(default_factory=dict)

    def env_override(self) -> str:
        """A Hydra override that sets the variable inside the job (and only there)."""
        fields = asdict(self)
        fields["pruner_options"] = {k: v for k, v in self.pruner_options.items() if v is not None}
        text = json.dumps(fields, separators=(",", ":"))
        return f"++hydra.job.env_set.{TRIAL_ENV}='" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"

    @classmethod
    def from_env(cls) -> TrialLink | None:
        text = os.environ.get(TRIAL_ENV)
        return cls(**json.loads(text)) if text else None

    @classmethod
    def from_job_dir(cls, job_dir: Path) -> TrialLink | None:
        """The link the sweeper gave a finished (or killed) job, from the `env_set` Hydra saved in its
        .hydra/hydra.yaml; None for a job of a grid sweep or of an in-memory study."""
        path = job_dir / ".hydra" / "hydra.yaml"
        text = OmegaConf.select(OmegaConf.load(path), f"hydra.job.env_set.{TRIAL_ENV}") if path.is_file() else None
        return cls(**json.loads(text)) if text else None

    def open(self) -> optuna.trial.Trial:
        """The running trial, for `report` and `should_prune` (with the sweep's pruner)."""
        study = optuna.load_study(study_name=self.study_name, storage=open_storage(self.storage),
                                  pruner=build_pruner(self.pruner, self.pruner_options),
                                  sampler=optuna.samplers.RandomSampler())  # nothing is sampled here
        return compat.reopen_trial(study, self.trial_id)

    def pruned_at(self) -> int | None:
        """The step at which the trial's pruner stopped it, None if it did not (read from the storage: under
        ddp_spawn the rank that decided was another process)."""
        return self.open().user_attrs.get(PRUNED_AT)


def pruned_at_step(cfg: DictConfig) -> int | None:
    """The step at which this job's Optuna trial was pruned; None outside a trial or when it ran to the end."""
    link = TrialLink.from_env()
    return link.pruned_at() if link is not None and cfg.get("train", True) else None


def mark_pruned(cfg: DictConfig, results: dict[str, Any], step: int) -> dict[str, Any]:
    """results.json of a pruned trial: what it reached (its validation metrics, `optimized_metric` so far), status
    "pruned" and the step. Neither a result to rank nor a failure."""
    from pytorch_lightning.utilities.rank_zero import rank_zero_only  # here: the sweeper imports this module

    results = {**results, "status": "pruned", PRUNED_AT: step}
    if rank_zero_only.rank == 0:
        write_json_atomic(Path(cfg.paths.output_dir) / "results.json", results)
    return results
