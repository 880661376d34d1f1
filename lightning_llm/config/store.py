"""Structured configs generated from the constructors, registered with Hydra's ConfigStore at import.

`conf/model/*.yaml` and `conf/data/*.yaml` extend them (`defaults: [/schema/model@_here_: <Class>, _self_]`), so
the YAML files hold only what differs from the class defaults, every constructor argument can be overridden by
name (`model.warmup_ratio=0.2`), and OmegaConf rejects a wrong type or a misspelled key while composing.
Every `HFTaskModule` and `CachedTextDataModule` subclass defined in a built-in task module (lightning_llm/tasks/) gets
one, named after the class.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import types
import typing
from typing import Any, Dict, List, Literal, Optional

from hydra.core.config_store import ConfigStore
from hydra.utils import get_class
from omegaconf import MISSING, DictConfig, OmegaConf

from lightning_llm import registry
from lightning_llm.config.schema import Setting, settings_of, strip_annotated
from lightning_llm.config.targets import allowed_targets, check_targets
from lightning_llm.data.base import CachedTextDataModule
from lightning_llm.modules.adapters import LoraSettings
from lightning_llm.modules.base import HFTaskModule
from lightning_llm.utils.paths import user_cache_dir

_PRIMITIVES = (int, float, bool, str)


def omegaconf_type(tp: Any) -> Any:
    """The nearest type OmegaConf's structured configs support (Any where none fits)."""
    tp, _ = strip_annotated(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp in _PRIMITIVES or tp is Any:
        return tp
    if origin is Literal:
        kinds = {type(a) for a in args}
        return kinds.pop() if len(kinds) == 1 and next(iter(kinds)) in _PRIMITIVES else Any
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        inner = omegaconf_type(rest[0]) if len(rest) == 1 else Any
        return Optional[inner] if len(rest) < len(args) and inner is not Any else inner
    if origin in (list, tuple, collections.abc.Sequence):
        element = omegaconf_type(args[0]) if args and (origin is not tuple or args[-1] is Ellipsis
                                                       or len(set(args)) == 1) else Any
        return List[element if element in _PRIMITIVES else Any]
    if origin in (dict, collections.abc.Mapping):
        return Dict[str, Any]
    return Any


def _field(setting: Setting) -> tuple[str, Any, Any]:
    tp = omegaconf_type(setting.annotation)
    default = setting.default
    if default is inspect.Parameter.empty:
        return setting.name, tp, dataclasses.field(default=MISSING)
    if default is None and dict in {typing.get_origin(a) for a in (tp, *typing.get_args(tp))}:
        default = {}  # an empty mapping, not null: `+model.config_overrides.key=value` can add to it
    if isinstance(default, (list, tuple, dict)):
        value = list(default) if isinstance(default, (list, tuple)) else dict(default)
        return setting.name, tp, dataclasses.field(default_factory=lambda v=value: v.copy())
    return setting.name, tp, dataclasses.field(default=default)


def schema_for(cls: type, exclude: collections.abc.Iterable[str]) -> type:
    fields = [("_target_", str, dataclasses.field(default=f"{cls.__module__}.{cls.__qualname__}"))]
    fields += [_field(s) for s in settings_of(cls, exclude).values()]
    return dataclasses.make_dataclass(f"{cls.__name__}Config", fields)


def _defined(base: type) -> list[type]:
    """The subclasses of `base` the built-in task modules define (not those they import)."""
    return [obj for module in registry.builtin_modules() for obj in vars(module).values()
            if isinstance(obj, type) and issubclass(obj, base) and obj is not base and obj.__module__ == module.__name__]


def register() -> None:
    store = ConfigStore.instance()
    for cls in _defined(HFTaskModule):
        store.store(group="schema/model", name=cls.__name__, node=schema_for(cls, model_exclusions(cls)),
                    provider="lightning_llm")
    for cls in _defined(CachedTextDataModule):
        store.store(group="schema/data", name=cls.__name__, node=schema_for(cls, CachedTextDataModule.derived_kwargs),
                    provider="lightning_llm")
    store.store(group="schema/peft", name="lora", node=LoraSettings, provider="lightning_llm")


def model_exclusions(cls: type[HFTaskModule]) -> frozenset[str]:
    """Constructor arguments the framework fills in (tokenizer- and data-derived), never configured."""
    return cls.derived_kwargs | cls.data_kwargs


_LOWER_IS_BETTER = ("loss", "ppl", "perplexity", "error")


def task_default(what: str, *, _root_: DictConfig) -> str:
    """`${task_default:optimized_metric|monitor|monitor_mode|task_name}`: the model class's own choice, so the root
    config names no task's metric and `optimized_metric=...` / `monitor.metric=...` still override it. `task_name`
    is the class's `task` (classification, token_classification, ...): a user's own runs of different tasks go to
    outputs/<task>/ instead of piling into one folder; an experiment's or the command line's `task_name` wins."""
    model = _root_.get("model")
    if not isinstance(model, DictConfig) or "_target_" not in model:
        raise ValueError(f"${{task_default:{what}}} needs model._target_")
    check_targets(model, "model", allowed_targets(_root_))
    cls = get_class(model._target_)
    if what == "task_name":
        return str(cls.task)
    defaults = cls.metric_defaults(model) if hasattr(cls, "metric_defaults") else \
        {"monitor": cls.monitor, "optimized_metric": cls.optimized_metric, "best_metric": cls.best_metric}
    if what == "optimized_metric":
        return defaults["optimized_metric"][0]
    if what == "monitor":
        return defaults["monitor"][0]
    if what == "monitor_mode":
        metric = _root_.monitor.metric
        for name, mode in (defaults["monitor"], defaults["optimized_metric"], defaults["best_metric"] or (None, None)):
            if metric == name:
                return mode
        return "min" if any(word in str(metric).lower() for word in _LOWER_IS_BETTER) else "max"
    raise ValueError(f"task_default: unknown setting {what!r} (optimized_metric, monitor, monitor_mode, "
                     f"task_name)")


def gpus_per_node(accelerator: str, devices: Any) -> Any:
    """`${gpus_per_node:${hardware.accelerator},${hardware.devices}}` (conf/hydra/launcher/slurm.yaml): the GPUs a
    SLURM job asks for on each node. None with `hardware.accelerator=cpu`: a CPU partition never grants a GPU, so
    a job asking for one would stay pending forever."""
    return None if str(accelerator).lower() == "cpu" else devices


register()
OmegaConf.register_new_resolver("task_default", task_default, replace=True)
OmegaConf.register_new_resolver("gpus_per_node", gpus_per_node, replace=True)
OmegaConf.register_new_resolver("user_cache_dir", user_cache_dir, replace=True)
