"""The task registry: task name -> the LightningModule class that implements it (lightning_llm/tasks/<name>.py).

Everything that used to be a table naming tasks outside them (the Auto class and head of an HF directory, the PEFT
task type, what each inference command accepts, the class paths of earlier versions) is declared by the task's
module class and found here, so the engine, the commands, `runtime/` and `config/` name no task. The built-in tasks
register when `lightning_llm.tasks` is imported, which the first lookup does; a task of your own registers by being
imported (its module's `_target_`, allowed with `allow_targets=[mypkg]`) and calling `register`.

Base layer: imports nothing of the package at module level.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

_TASKS: dict[str, type] = {}
_LEGACY: dict[str, str] = {}  # a class path of an earlier version -> the current one
_BUILTIN = "lightning_llm.tasks"


def register(module_cls: type, *, legacy: dict[str, type] | None = None) -> type:
    """Register `module_cls` (an `HFTaskModule` subclass declaring `task`) under its task name; `legacy` maps class
    paths that checkpoints and saved run configs of earlier versions name to the classes that replace them."""
    name = module_cls.task
    current = _TASKS.get(name)
    if current is not None and _path(current) != _path(module_cls):
        raise ValueError(f"task {name!r} is registered twice: {_path(current)} and {_path(module_cls)}")
    _TASKS[name] = module_cls
    register_legacy(legacy or {})
    return module_cls


def register_legacy(legacy: dict[str, type]) -> None:
    """Class paths that earlier versions wrote into checkpoints and run configs -> the classes replacing them (for
    classes that are no task of their own: shared data modules, wrappers)."""
    for old, cls in legacy.items():
        _LEGACY[old] = _path(cls)


def _path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _load_builtin() -> None:
    importlib.import_module(_BUILTIN)


def builtin_modules() -> list[ModuleType]:
    """The modules of the built-in tasks (lightning_llm/tasks/*.py), imported: where config/store.py finds the
    classes to generate config schemas from."""
    package = importlib.import_module(_BUILTIN)
    return [importlib.import_module(f"{_BUILTIN}.{info.name}") for info in pkgutil.iter_modules(package.__path__)]


def tasks() -> dict[str, type]:
    """Every registered task: name -> module class."""
    _load_builtin()
    return dict(_TASKS)


def get(name: str) -> type:
    """The module class of task `name` (KeyError naming the registered ones when there is none)."""
    found = tasks().get(name)
    if found is None:
        raise KeyError(f"no task {name!r} (registered: {', '.join(sorted(_TASKS))})")
    return found


def supporting(capability: Callable[[type], Any]) -> list[str]:
    """Names of the tasks whose module class has `capability` (e.g. `lambda cls: cls.predictor`), sorted."""
    return sorted(name for name, cls in tasks().items() if capability(cls))


def describe(names: Iterable[str]) -> str:
    """Task names as a user reads them in an error ("classification, token_classification")."""
    return ", ".join(sorted(names))


def current_target(target: str) -> str:
    """The class path that replaces `target` when an earlier version named it (else `target` unchanged)."""
    if target.startswith("lightning_llm."):
        _load_builtin()
    return _LEGACY.get(target, target)
