"""Optional dependencies (pip extras, pyproject.toml): a run that needs a missing one stops with one line that
names the extra, e.g. `error: logger=wandb needs the wandb extra: pip install "lightning-llm[wandb]"`."""

from __future__ import annotations

import importlib
from types import ModuleType

from lightning_llm.errors import UserError

# Command-line choices -> (module, extra) they need, checked before Hydra starts (Hydra itself would fail in
# several lines for a missing launcher plugin). Loggers chosen in config files are checked when built.
_CHOICES = {
    ("logger", "wandb"): [("wandb", "wandb")],
    ("logger", "tensorboard"): [("tensorboard", "tensorboard")],
    ("logger", "many"): [("wandb", "wandb"), ("tensorboard", "tensorboard")],
    ("peft", "lora"): [("peft", "peft")],
    ("model.peft", "lora"): [("peft", "peft")],
    ("hydra/launcher", "slurm"): [("hydra_plugins.hydra_submitit_launcher", "slurm")],
    ("hydra/launcher", "submitit_slurm"): [("hydra_plugins.hydra_submitit_launcher", "slurm")],
    ("hydra/launcher", "submitit_local"): [("hydra_plugins.hydra_submitit_launcher", "slurm")],
}


def require_extra(module: str, extra: str, what: str) -> ModuleType:
    """Import `module`; when it is not installed, raise `UserError("<what> needs the <extra> extra: ...")`."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name and (module == err.name or module.startswith(err.name + ".")):
            raise UserError(f'{what} needs the {extra} extra: pip install "lightning-llm[{extra}]"') from err
        raise  # installed, but something it imports is missing: that error says more


def check_command_line(argv: list[str]) -> None:
    """The extras that `group=option` choices on the command line need (`logger=wandb`, `logger=[csv,wandb]`,
    `-m logger=csv,many`, `hydra/launcher=slurm`)."""
    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        if not sep:
            continue
        for option in value.strip("[]()").split(","):
            for module, extra in _CHOICES.get((key.strip(), option.strip()), []):
                require_extra(module, extra, f"{key.strip()}={option.strip()}")
