"""Typed settings from the constructors themselves: one source for each default and each allowed range.

The `__init__` signatures of the modules and data modules are the schema. Their type hints say what a value must
be, `Annotated[..., Range(...)]` (spelled `Positive[int]`, `UnitFraction`, ...) says which values make sense, and
their defaults are the defaults. `config.store` turns each signature into a structured config that the YAML
options extend, so every setting can be overridden by name; `check_node` checks a config node against a signature
(unknown keys with a suggestion, types, ranges) in one line naming the key.
"""

from __future__ import annotations

import collections.abc
import difflib
import inspect
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from lightning_llm.errors import UserError


@dataclass(frozen=True)
class Range:
    """Allowed interval of a numeric setting; `None` bounds are open-ended."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def violation(self, value: Any) -> str | None:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return None
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return f"must be {'>' if self.low_open else '>='} {_num(self.low)}"
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return f"must be {'<' if self.high_open else '<='} {_num(self.high)}"
        return None


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


class _Bounded:
    """`Positive[int]` -> `Annotated[int, Range(0, low_open=True)]`."""

    def __init__(self, bounds: Range) -> None:
        self.bounds = bounds

    def __getitem__(self, tp: Any) -> Any:
        return Annotated[tp, self.bounds]


Positive = _Bounded(Range(0, low_open=True))
NonNegative = _Bounded(Range(0))
AtLeastMinusOne = _Bounded(Range(-1))  # Lightning's "-1 = no limit"
UnitFraction = Annotated[float, Range(0, 1)]  # [0, 1]
OpenUnitFraction = Annotated[float, Range(0, 1, low_open=True, high_open=True)]  # (0, 1)
Probability = Annotated[float, Range(0, 1, high_open=True)]  # [0, 1): dropout, masking rates


# ----------------------------------------------------------------------------------------------- signatures
@dataclass(frozen=True)
class Setting:
    name: str
    annotation: Any  # with Annotated metadata
    default: Any  # inspect.Parameter.empty when required


def settings_of(cls: type, exclude: collections.abc.Iterable[str] = ()) -> dict[str, Setting]:
    """Keyword parameters of `cls.__init__`, following `**kwargs` up the class hierarchy (subclass first)."""
    excluded, found = set(exclude), {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        hints = typing.get_type_hints(init, include_extras=True)
        params = inspect.signature(init).parameters.values()
        for p in params:
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self" and p.name not in found \
                    and p.name not in excluded:
                found[p.name] = Setting(p.name, hints.get(p.name, Any), p.default)
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return found


def strip_annotated(tp: Any) -> tuple[Any, list[Any]]:
    if typing.get_origin(tp) is Annotated:
        base, *meta = typing.get_args(tp)
        inner, more = strip_annotated(base)
        return inner, [*meta, *more]
    return tp, []


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def conforms(value: Any, tp: Any) -> bool:
    """Whether a plain (resolved) config value fits a type hint; unknown kinds of hints are not second-guessed."""
    tp, _ = strip_annotated(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or (isinstance(value, str) and value.startswith("${")):
        return True
    if _is_union(tp):
        return any(conforms(value, arg) for arg in args)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin is Literal:
        return value in args
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        element = args[0] if args and (origin is not tuple or len(args) == 2 and args[1] is Ellipsis) else Any
        return all(conforms(v, element) for v in value)
    if origin in (dict, collections.abc.Mapping):
        return isinstance(value, dict)
    return True


def describe(tp: Any) -> str:
    tp, _ = strip_annotated(tp)
    if _is_union(tp):
        return " or ".join(describe(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (list, tuple, collections.abc.Sequence):
        return "a list"
    if origin in (dict, collections.abc.Mapping):
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def suggest(key: str, choices: collections.abc.Iterable[str], where: str = "") -> str:
    """"; did you mean <where>.<closest>?" for a misspelled key, or nothing when no valid key is close."""
    close = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {where + '.' if where else ''}{close[0]}?" if close else ""


def check_value(where: str, value: Any, setting: Setting) -> None:
    if not conforms(value, setting.annotation):
        raise UserError(f"{where}={value!r}: must be {describe(setting.annotation)}")
    for meta in strip_annotated(setting.annotation)[1]:
        reason = meta.violation(value) if isinstance(meta, Range) else None
        if reason:
            raise UserError(f"{where}={value!r} is out of range: {reason}")


def check_node(values: collections.abc.Mapping[str, Any], where: str, cls: type,
               exclude: collections.abc.Iterable[str] = ()) -> None:
    """Check a resolved config node (plain dict) against `cls`'s settings: unknown keys, types, ranges."""
    settings = settings_of(cls, exclude)
    for key, value in values.items():
        if key.startswith("_") and key.endswith("_"):  # _target_, _convert_, ...
            continue
        if key not in settings:
            raise UserError(f"{where}.{key} is not a setting of {cls.__name__}{suggest(key, settings, where)}")
        check_value(f"{where}.{key}", value, settings[key])
