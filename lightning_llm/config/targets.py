"""`hydra.utils.instantiate` behind an allow-list: instantiating an untrusted config is code execution."""

from __future__ import annotations

import re
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from lightning_llm import registry
from lightning_llm.errors import UserError

ALLOWED_PREFIXES = ("lightning_llm.", "torch.", "transformers.", "pytorch_lightning.", "torchmetrics.")
# Inside those packages, callables that load pickles or fetch and run code: an allow-listed package is not a
# sandbox, so these are refused by name, as are private names (`torch._C...`).
DENIED_PREFIXES = ("torch.hub.", "torch.load", "torch.jit.load", "torch.package.", "torch.utils.cpp_extension.",
                   "torch.serialization.", "torch.distributed.rpc.", "torch.compiler.load", "transformers.pipeline",
                   "transformers.dynamic_module_utils.", "transformers.utils.hub.")


ALLOW_HINT = "(allow your own package with allow_targets=[mypkg])"
_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def allowed_targets(cfg: Any) -> tuple[str, ...]:
    """The extra `_target_` prefixes the user allowed with `allow_targets=[mypkg, ...]` (module names) in the
    config being run: its command line or the user's own config files. Never read it from a checkpoint or a
    saved run config: those may come from someone else. A bad entry is one `UserError` naming the key."""
    value = cfg.get("allow_targets") if isinstance(cfg, (DictConfig, dict)) else None
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    elif isinstance(value, ListConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if not isinstance(value, (list, tuple)):
        raise UserError(f"allow_targets={value!r}: must be a list of module names, e.g. allow_targets=[mypkg]")
    names = []
    for item in value:
        if not isinstance(item, str) or not _MODULE_NAME.fullmatch(item.removesuffix(".")):
            raise UserError(f"allow_targets: {item!r} is not a module name (a dotted Python name such as mypkg or "
                            f"mypkg.callbacks)")
        names.append(item.removesuffix("."))
    return tuple(names)


def target_refusal(target: str, allowed: tuple[str, ...] = ()) -> str | None:
    """Why `target` may not be instantiated, or None when it may. `allowed`: extra module prefixes (see
    `allowed_targets`); the deny-list and the refusal of private names apply inside them too."""
    extra = tuple(f"{name}." for name in allowed)
    if not target.startswith(ALLOWED_PREFIXES + extra):
        names = ", ".join(p.rstrip(".") for p in ALLOWED_PREFIXES + extra)
        return f"only targets under {names} can be instantiated {ALLOW_HINT}"
    if target.startswith(DENIED_PREFIXES) or any(part.startswith("_") for part in target.split(".")):
        return "it can load pickled objects or run fetched code (or is private)"
    return None


def check_targets(node: Any, where: str = "", allowed: tuple[str, ...] = ()) -> None:
    """Refuse any `_target_` (at any depth) that is not in our package, a trusted ML library or a package in
    `allowed`. Interpolations and missing values are not resolved (they may need Hydra's runtime)."""
    if isinstance(node, DictConfig):
        target = node.get("_target_") if "_target_" in node else None
        reason = target_refusal(str(target), allowed) if target is not None else None
        if reason:
            raise UserError(f"{where or 'config'}._target_={target!r} is not allowed: {reason}")
        for key in node.keys():
            if key != "_target_" and not _unresolved(node, key):
                check_targets(node[key], f"{where}.{key}" if where else str(key), allowed)
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            if not _unresolved(node, i):
                check_targets(node[i], f"{where}[{i}]", allowed)


def _unresolved(node: DictConfig | ListConfig, key: Any) -> bool:
    return OmegaConf.is_missing(node, key) or OmegaConf.is_interpolation(node, key)


def upgrade_targets(node: Any) -> Any:
    """Rewrite, in place, the `_target_`s (at any depth) that an earlier version named to the classes that replace
    them (`registry.current_target`): run configs and checkpoints written before the task redesign still load."""
    if isinstance(node, DictConfig):
        if "_target_" in node and not _unresolved(node, "_target_") and isinstance(node._target_, str):
            node._target_ = registry.current_target(node._target_)
        for key in node.keys():
            if key != "_target_" and not _unresolved(node, key):
                upgrade_targets(node[key])
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            if not _unresolved(node, i):
                upgrade_targets(node[i])
    return node


def safe_instantiate(config: DictConfig, where: str, allowed: tuple[str, ...] = (), **kwargs: Any) -> Any:
    """Instantiate `config` after checking every `_target_` in it against the allow-list (+ `allowed`)."""
    upgrade_targets(config)
    check_targets(config, where, allowed)
    return instantiate(config, _convert_="all", **kwargs)


def instantiate_collection(config: DictConfig | None, where: str, allowed: tuple[str, ...] = ()) -> list[Any]:
    """Instantiate each entry of a mapping of `_target_` configs (callbacks, loggers); null entries are skipped."""
    if not config:
        return []
    check_targets(config, where, allowed)
    return [instantiate(node) for node in config.values() if isinstance(node, DictConfig) and "_target_" in node]


def to_primitive(config: Any) -> Any:
    """A resolved plain-Python copy of a config node (for hyper-parameters and logging)."""
    if isinstance(config, (DictConfig, ListConfig)):
        return OmegaConf.to_container(config, resolve=True)
    return config
