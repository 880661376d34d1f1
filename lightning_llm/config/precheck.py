"""The composed config, checked before Hydra creates a run directory."""

from __future__ import annotations


def precheck(argv: list[str], config_name: str) -> None:
    """Compose `config_name` with the command line's overrides and validate it; raises `UserError`."""
