"""`hydra.utils.instantiate` behind an allow-list: instantiating an untrusted config is code execution."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from lightning_llm.errors import UserError

ALLOWED_PREFIXES = ("lightning_llm.", "torch.", "transformers.", "pytorch_lightning.", "torchmetrics.")
# Inside those packages, callables that load pickles or fetch and run code: an allow-listed package is not a
# sandbox, so these are refused by name, as are private names (`torch._C...`).
DENIED_PREFIXES = ("torch.hub.", "torch.load", "torch.jit.load", "torch.package.", "torch.utils.cpp_extension.",
                   "torch.serialization.", "torch.distributed.rpc.", "torch.compiler.load", "transformers.pipeline",
                   "transformers.dynamic_module_utils.", "transformers.utils.hub.")


def target_refusal(target: str) -> str | None:
    """Why `target` may not be instantiated, or None when it may."""
    if not target.startswith(ALLOWED_PREFIXES):
        return f"only targets under {', '.join(p.rstrip('.') for p in ALLOWED_PREFIXES)} can be instantiated"
    if target.startswith(DENIED_PREFIXES) or any(part.startswith("_") for part in target.split(".")):
        return "it can load pickled objects or run fetched code (or is private)"
    return None


def check_targets(node: Any, where: str = "") -> None:
    """Refuse any `_target_` (at any depth) that is not in our package or a trusted ML library."""
    if isinstance(node, DictConfig):
        target = node.get("_target_") if "_target_" in node else None
        reason = target_refusal(str(target)) if target is not None else None
        if reason:
            raise UserError(f"{where or 'config'}._target_={target!r} is not allowed: {reason}")
        for key in node.keys():
            if key != "_target_":
                check_targets(node._get_node(key), f"{where}.{key}" if where else str(key))
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node._iter_ex(resolve=False)):
            check_targets(item, f"{where}[{i}]")


def safe_instantiate(config: DictConfig, where: str, **kwargs: Any) -> Any:
    """Instantiate `config` after checking every `_target_` in it against the allow-list."""
    check_targets(config, where)
    return instantiate(config, _convert_="all", **kwargs)


def instantiate_collection(config: DictConfig | None, where: str) -> list[Any]:
    """Instantiate each entry of a mapping of `_target_` configs (callbacks, loggers); null entries are skipped."""
    if not config:
        return []
    check_targets(config, where)
    return [instantiate(node) for node in config.values() if isinstance(node, DictConfig) and "_target_" in node]


def to_primitive(config: Any) -> Any:
    """A resolved plain-Python copy of a config node (for hyper-parameters and logging)."""
    if isinstance(config, (DictConfig, ListConfig)):
        return OmegaConf.to_container(config, resolve=True)
    return config
