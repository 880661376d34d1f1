"""Experiment loggers. W&B: one run per job, never blocking or crashing (no API key = offline, said in one
line), secrets redacted, resumable (the run id lives in the run directory). TensorBoard: an HParams session
per job so its dashboard compares the jobs of a sweep."""

from __future__ import annotations

import os
import socket
import sys
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only

# AppendingCSVLogger lives in compat (it replaces Lightning internals); conf/logger/csv.yaml names it here.
from lightning_llm.compat import AppendingCSVLogger as AppendingCSVLogger
from lightning_llm.compat import tensorboard_file_writer
from lightning_llm.config.secrets import redact
from lightning_llm.runtime.extras import require_extra
from lightning_llm.tracking.jobs import job_identity

WANDB_ID_FILE = "wandb_run_id.txt"
_SYNC_HINT = "upload later with `wandb sync <run_dir>/wandb/offline-run-*`"
_server_unreachable = False  # set once an online start failed in this process


def wandb_has_credentials() -> bool:
    """True when an API key is in the environment or in ~/.netrc (what `wandb login` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import netrc

        return any("wandb" in host for host in netrc.netrc().hosts)
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def make_wandb_logger(*, project: str, save_dir: str, offline: bool = False, group: str | None = None,
                      job_type: str | None = None, entity: str | None = None, tags: list[str] | None = None,
                      log_model: bool = False, name: str | None = None, id: str | None = None,
                      **kwargs: Any) -> WandbLogger:
    """A `WandbLogger` for one job. In a sweep the group defaults to the multirun directory's name and the
    run name to the job's swept overrides. The run id is kept in <save_dir>/wandb_run_id.txt: a job resumed
    in the same directory continues the same W&B run."""
    global _server_unreachable
    require_extra("wandb", "wandb", "logger=wandb")
    sweep_group, run_name = job_identity()
    os.makedirs(save_dir, exist_ok=True)

    def make(mode: str | None, new_id: bool = False) -> WandbLogger:
        # mode="offline" goes to wandb.init; WandbLogger(offline=True) would set WANDB_MODE for the whole
        # process and make every later job of a sweep offline too.
        run_id = id or _run_id(Path(save_dir), new=new_id)
        return WandbLogger(project=project, save_dir=save_dir, group=redact(group or sweep_group),
                           job_type=job_type, entity=entity, tags=redact(list(tags or [])), log_model=log_model,
                           name=redact(name or run_name), id=run_id, resume="allow", settings=_settings(),
                           **({**kwargs, "mode": mode} if mode else kwargs))

    if offline or _server_unreachable:
        return make("offline")
    if os.environ.get("WANDB_MODE", "") in ("offline", "disabled"):
        return make(None)  # wandb follows WANDB_MODE itself
    if not wandb_has_credentials():
        print(f"wandb: no API key found (WANDB_API_KEY or `wandb login`): logging offline; {_SYNC_HINT}")
        return make("offline")
    if not _server_reachable():
        _server_unreachable = True
        print(f"wandb: {_base_url().geturl()} cannot be reached: logging offline; {_SYNC_HINT}")
        return make("offline")
    logger = make(None)
    if rank_zero_only.rank == 0:  # start the run now: a server that cannot be reached means offline, not a crash
        try:
            logger.experiment
        except Exception as err:
            _server_unreachable = True  # later jobs of this sweep go offline at once instead of waiting again
            print(f"wandb: cannot start an online run ({type(err).__name__}): logging offline; {_SYNC_HINT}")
            logger = make("offline", new_id=True)  # wandb keeps the failed run's id reserved in this process
    return logger


def make_tensorboard_logger(**kwargs: Any) -> TensorBoardLogger:
    """`TensorBoardLogger(**kwargs)`, or one line naming the tensorboard extra when it is not installed."""
    require_extra("tensorboard", "tensorboard", "logger=tensorboard")
    return TensorBoardLogger(**kwargs)


def _base_url() -> urllib.parse.ParseResult:
    return urllib.parse.urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))


def _server_reachable(timeout_s: float = 5.0) -> bool:
    """A TCP connect to the W&B server. Measured: wandb.init without network stalls ~90 s even with
    init_timeout=30 (retries, then a slow shutdown); this probe answers in at most `timeout_s`."""
    url = _base_url()
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=timeout_s).close()
        return True
    except (OSError, ValueError):
        return False


def _run_id(run_dir: Path, new: bool = False) -> str:
    """The id saved in the run directory, or a new one saved there (by rank 0: the only rank that logs)."""
    path = run_dir / WANDB_ID_FILE
    if not new and path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:12]  # OS entropy: runs seeded alike must not share an id
    if rank_zero_only.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(run_id + "\n")
    return run_id


def _settings() -> Any:
    import wandb

    # No network must not mean a 90 s stall: short init timeout. "finish_previous" is a safety net: a run
    # left open by an earlier job must not swallow this job's metrics.
    return wandb.Settings(init_timeout=30, console="off", silent=True, reinit="finish_previous")


def log_config(loggers: list[Any], config: dict[str, Any]) -> None:
    """Log the resolved config, secrets redacted, as hyper-parameters of every logger."""
    safe = redact(config)
    for logger in loggers:
        logger.log_hyperparams(safe)


def finish_loggers(loggers: list[Any], config: dict[str, Any], results: dict[str, Any]) -> None:
    """End of a job: the config + metrics as a TensorBoard HParams session (it shows each tag's last logged
    value), the outcome in the W&B summary, and the W&B run finished so the next job of a sweep starts its own."""
    final = {**(results.get("val") or {}), **(results.get("test") or {})}
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            _log_tensorboard_hparams(logger, redact(config), final)
        elif isinstance(logger, WandbLogger) and rank_zero_only.rank == 0:
            metric = results.get("optimized_metric") or {}
            logger.experiment.summary.update({"status": results.get("status"),
                                              "optimized_metric": metric.get("value")})
    finish_wandb()


def finish_wandb(exit_code: int = 0) -> None:
    """Finish the process's W&B run, if one is open (marked failed with exit_code=1)."""
    if "wandb" in sys.modules and sys.modules["wandb"].run is not None:
        sys.modules["wandb"].finish(exit_code=exit_code)


def _log_tensorboard_hparams(logger: TensorBoardLogger, config: dict[str, Any], metrics: dict[str, float]) -> None:
    """Write the HParams session summaries only. The metric tags name scalars Lightning already logged at their
    real steps, so the dashboard shows their last (final) values; `TensorBoardLogger.log_hyperparams(params,
    metrics)` would also log every metric again at step 0 and bend the learning curves."""
    if rank_zero_only.rank != 0 or not metrics:
        return
    from torch.utils.tensorboard.summary import hparams

    writer = tensorboard_file_writer(logger)
    for summary in hparams(_flatten(config), metrics):
        writer.add_summary(summary)
    writer.flush()


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> {"model/learning_rate": 1e-3, ...} with the value types TensorBoard accepts."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}/"))
        else:
            flat[name] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return flat
