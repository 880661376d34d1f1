"""Private APIs of Hydra and Optuna we depend on (see lightning_llm/compat/__init__.py). Imports neither torch nor
Lightning: the Hydra sweeper plugin and `llm-report` use it."""

from __future__ import annotations

from typing import Any

from hydra.core.utils import JobReturn


# ------------------------------------------------------------------------------------------------------- Hydra
def failed_job_error(ret: JobReturn) -> BaseException | None:
    """The exception a failed Hydra job raised (None when the job did not fail). Wraps
    `JobReturn._return_value`: the public `JobReturn.return_value` re-raises it and first writes "Error executing
    job with overrides ..." to stderr, which a sweeper recording a failed trial must not do."""
    value = ret._return_value
    return value if isinstance(value, BaseException) else None


def hydra_args(argv: list[str]) -> Any:
    """`argv` parsed as `@hydra.main` parses it (overrides, --config-dir, -m, --cfg, ...). Hydra keeps its
    argument parser in `hydra._internal.utils`; the precheck composes the same config before Hydra starts."""
    from hydra._internal.utils import get_args_parser

    return get_args_parser().parse_args(argv)


# ------------------------------------------------------------------------------------------------------ Optuna
def trial_id(trial: Any) -> int:
    """The storage id of a `Trial` or `FrozenTrial` (`_trial_id`). Optuna exposes only `number`, which is per
    study; the storage API (`record_heartbeat`, re-opening a trial in another process) takes the id."""
    return int(trial._trial_id)


def reopen_trial(study: Any, trial_id: int) -> Any:
    """A running trial of `study` as an `optuna.trial.Trial`, in a process other than the one that asked for it
    (the sweeper asks; the training job reports and prunes). Optuna documents `Trial(study, trial_id)` as built
    by the study only; its own distributed recipe has each worker ask, which would let jobs pick the trials."""
    import optuna

    return optuna.trial.Trial(study, trial_id)
