"""Optional dependencies (pip extras, pyproject.toml): a run that needs a missing one stops with one line that
names the extra and how to install it as this copy was installed, e.g. `error: logger=wandb needs the wandb extra:
pip install -e "/path/to/clone[wandb]"` (lightning-llm is installed from a clone, not from a registry)."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import re
from types import ModuleType
from urllib.parse import unquote, urlparse

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


def install_hint(extra: str) -> str:
    """The pip command that installs `extra` here: `pip install -e "<clone>[extra]"` for a copy installed from a
    clone (editable or not), else the extra's own requirements; `pip install -e ".[extra]"` when neither is known."""
    try:
        dist = importlib.metadata.distribution("lightning-llm")
    except importlib.metadata.PackageNotFoundError:
        return f'pip install -e ".[{extra}]" (in a clone of lightning-llm)'
    url = json.loads(dist.read_text("direct_url.json") or "{}").get("url", "")
    if url.startswith("file://"):
        editable = "-e " if json.loads(dist.read_text("direct_url.json")).get("dir_info", {}).get("editable") else ""
        return f'pip install {editable}"{unquote(urlparse(url).path)}[{extra}]"'
    marker = re.compile(rf"""extra\s*==\s*["']{re.escape(extra)}["']""")
    needs = [r.split(";")[0].strip() for r in dist.requires or [] if marker.search(r)]
    return "pip install " + " ".join(f'"{r}"' for r in needs) if needs else f'pip install -e ".[{extra}]"'


def require_extra(module: str, extra: str, what: str) -> ModuleType:
    """Import `module`; when it is not installed, raise `UserError("<what> needs the <extra> extra: ...")`."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name and (module == err.name or module.startswith(err.name + ".")):
            raise UserError(f"{what} needs the {extra} extra: {install_hint(extra)}") from err
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
