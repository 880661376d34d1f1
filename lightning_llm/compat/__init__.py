"""Every private (underscore) API of a third-party library this package uses, in one package: an upgrade of
Lightning, Hydra, OmegaConf, Optuna, torch or transformers is reviewed here, and tests/test_compat.py exercises each
wrapper against the installed versions (tests/test_structure.py keeps private uses out of every other file).

Each wrapper says what it wraps and why no public API does the job. The package imports only third-party
libraries, so every module may import it without forming an import cycle. `compat.<name>` of the Lightning/torch
wrappers (compat/lightning.py) imports them on first use: the Hydra sweeper plugin and `llm-report`, which use only
the Hydra/Optuna ones, never import torch or Lightning through here.
"""

from __future__ import annotations

import importlib
from typing import Any

from lightning_llm.compat.hydra_optuna import failed_job_error, hydra_args, reopen_trial, trial_id

__all__ = ["failed_job_error", "hydra_args", "reopen_trial", "trial_id"]


def __getattr__(name: str) -> Any:
    """The Lightning/torch/transformers wrappers, imported when first asked for (PEP 562)."""
    if name.startswith("__"):
        raise AttributeError(name)
    value = getattr(importlib.import_module("lightning_llm.compat.lightning"), name)
    globals()[name] = value
    return value
