"""Experiment loggers. W&B never blocks or crashes: no API key means offline mode, said in one line."""

from __future__ import annotations

import os
from typing import Any

from pytorch_lightning.loggers import WandbLogger

from lightning_llm.utils.secrets import redact


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
    """A `WandbLogger` that falls back to offline mode without credentials and restores `WANDB_MODE` after."""
    mode_env = os.environ.get("WANDB_MODE", "")
    if not offline and mode_env not in ("offline", "disabled") and not wandb_has_credentials():
        print("wandb: no API key found (WANDB_API_KEY or `wandb login`): logging offline; "
              "upload later with `wandb sync <run_dir>/wandb/offline-run-*`")
        offline = True
    os.makedirs(save_dir, exist_ok=True)
    return WandbLogger(project=project, save_dir=save_dir, offline=offline or mode_env == "offline", group=group,
                       job_type=job_type, entity=entity, tags=list(tags or []), log_model=log_model, name=name,
                       id=id, resume="allow" if id else None, settings=_settings(), **kwargs)


def _settings() -> Any:
    import wandb

    # No network on the machine must not mean a 90 s stall: keep the init timeout short.
    return wandb.Settings(init_timeout=30, console="off", silent=True)


def log_config(loggers: list[Any], config: dict[str, Any]) -> None:
    """Log the resolved config, secrets redacted, as hyper-parameters of every logger."""
    safe = redact(config)
    for logger in loggers:
        logger.log_hyperparams(safe)
