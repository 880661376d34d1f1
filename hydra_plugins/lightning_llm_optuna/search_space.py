"""Hydra's sweep syntax (`choice`, `range`, `interval`, `tag(log, ...)`, `a,b`) as Optuna distributions."""

from __future__ import annotations

import re
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
)
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

_PLAIN = re.compile(r"[\w./:+\-]*")


def to_distribution(override: Override) -> BaseDistribution:
    """One sweep override as a distribution. `range` keeps Hydra's meaning: the stop value is excluded."""
    value = override.value()
    if isinstance(value, ChoiceSweep):
        choices = list(value.list)
        if not all(isinstance(c, (str, int, float, bool, type(None))) for c in choices):
            raise ValueError(f"{override.input_line}: choices must be numbers, strings, booleans or null")
        return CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        if value.shuffle:
            return CategoricalDistribution(list(override.sweep_iterator()))
        start, stop, step = value.start, value.stop, value.step
        if any(isinstance(x, float) for x in (start, stop, step)):
            n = int((stop - start) / step - 1e-9)  # last value strictly below stop
            return FloatDistribution(start, start + n * step, step=step)
        last = start + ((stop - 1 - start) // step) * step
        return IntDistribution(int(start), int(last), step=int(step))
    if isinstance(value, IntervalSweep):
        return FloatDistribution(float(value.start), float(value.end), log="log" in value.tags)
    raise ValueError(f"{override.input_line}: not a sweep Optuna can sample (use choice, range or interval)")


def parse_search_space(overrides: list[str]) -> tuple[dict[str, BaseDistribution], list[str]]:
    """Split `key=value` strings into sampled distributions and fixed overrides passed to every trial.

    A key given both ways (a sweep in the config, a plain value on the command line) is fixed: the command
    line wins, as elsewhere in Hydra."""
    distributions: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element()  # with its +/++ prefix: a trial may add keys
        if override.is_sweep_override():
            distributions[key] = to_distribution(override)
            fixed.pop(key, None)
        else:
            fixed[key] = override.input_line
            distributions.pop(key, None)
    return distributions, list(fixed.values())


def override_value(value: Any) -> str:
    """A sampled value written back in override syntax (quoted when Hydra's grammar needs it)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and not _PLAIN.fullmatch(value):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(value)
