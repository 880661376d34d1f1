"""User-facing errors: one line that names the offending key, file or column, and a non-zero exit."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from hydra.errors import HydraException


class UserError(Exception):
    """A problem with the user's config, data or paths, reported as one line without a traceback."""


def require(condition: bool, message: str) -> None:
    """Raise `UserError(message)` unless `condition` holds."""
    if not condition:
        raise UserError(message)


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (library errors often span many lines)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _chain(err: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    while err is not None and err not in chain:
        chain.append(err)
        err = err.__cause__
    return chain


def user_error_in(err: BaseException) -> UserError | None:
    """The UserError behind `err`, if any: Hydra's instantiate wraps errors raised in constructors."""
    return next((e for e in _chain(err) if isinstance(e, UserError)), None)


def error_line(err: BaseException) -> str:
    """The error as one line: our own message for a UserError, else the first error past Hydra's wrappers."""
    root = user_error_in(err) or next((e for e in _chain(err) if not isinstance(e, HydraException)), err)
    text = " ".join(str(root).split())
    return text if isinstance(root, UserError) else f"{type(root).__name__}: {text}"


class TrainingDivergedError(UserError):
    """The training loss became NaN or infinite; the run stops and reports it instead of metrics."""


def exit_on_user_error(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for non-Hydra parts of an entry point (argument checks before Hydra starts): a `UserError`
    becomes `error: <one line>` on stderr and exit code 2."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    return wrapper
