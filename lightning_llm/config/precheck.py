"""The composed config, checked before Hydra creates a run directory: a typo, a wrong type or a value out of
range is one `error:` line (exit 2) and nothing is written."""

from __future__ import annotations

import os
import re

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lightning_llm import compat
from lightning_llm.config import CONFIG_DIR
from lightning_llm.config.schema import suggest
from lightning_llm.config.validation import SWEEP_PUSH, check_settings
from lightning_llm.errors import UserError, first_line


def _one_value(override: Override) -> str:
    """A sweep override reduced to its first value (every job composes the same keys), in override syntax."""
    if not override.is_sweep_override():
        return override.input_line
    value = override.value()
    first = str(value.start) if isinstance(value, IntervalSweep) else next(override.sweep_string_iterator())
    return f"{override.get_key_element()}={first}"


def precheck(argv: list[str], config_name: str) -> None:
    """Compose `config_name` with the command line's overrides as Hydra will and check every setting; raises
    `UserError`. Skipped for Hydra's own commands (--help, --cfg, --info, ...), which compose nothing to run."""
    args = compat.hydra_args(argv)
    if args.help or args.hydra_help or args.cfg or args.info or args.shell_completion:
        return
    overrides = [_one_value(o) for o in OverridesParser.create().parse_overrides(args.overrides)]
    if args.config_dir:
        overrides.append(f"hydra.searchpath=[file://{os.path.abspath(args.config_dir)}]")
    cfg = _compose(args.config_name or config_name, overrides)
    check_settings(cfg)
    searched = any(o.split("=", 1)[0].lstrip("+~") == "hparams_search" and not o.endswith("=null") for o in overrides)
    if cfg.get("push_to_hub") and (args.multirun or searched):
        raise UserError(SWEEP_PUSH)


def _compose(config_name: str, overrides: list[str]) -> DictConfig:
    previous = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            try:
                return compose(config_name=config_name, overrides=overrides)
            except (HydraException, OmegaConfBaseException) as err:
                raise UserError(composition_error(err, config_name)) from err
    finally:
        if previous is not None:
            GlobalHydra.instance().initialize(previous)


def composition_error(err: BaseException, config_name: str) -> str:
    """Hydra's multi-line composition errors as one line naming the key (with the closest valid key for a
    typo)."""
    cause = err.__cause__ if isinstance(err.__cause__, OmegaConfBaseException) else err
    key = getattr(cause, "full_key", None)
    text = " ".join(str(err).split())
    if key and isinstance(cause, (AttributeError, KeyError)) or "not in struct" in str(cause):
        return f"{key}: no such setting{_closest(cause, key)}"
    if key:
        return f"{key}: {first_line(cause)}"
    missing = re.search(r"Could not find '([^']+)'", text)
    if missing:
        return f"{missing.group(1)}: no such config option ({first_line(err)})"
    return first_line(err)


def _closest(cause: OmegaConfBaseException, key: str) -> str:
    parent, name = (key.rsplit(".", 1) + [""])[:2] if "." in key else ("", key)
    node = getattr(cause, "parent_node", None)
    if node is None and getattr(cause, "object_type", None) is not None:
        node = OmegaConf.structured(cause.object_type)
    return suggest(name, [str(k) for k in node] if isinstance(node, DictConfig) else [], parent)
