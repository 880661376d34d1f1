"""User-facing errors: one line that names the offending key, file or column, and a non-zero exit."""

from __future__ import annotations


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
