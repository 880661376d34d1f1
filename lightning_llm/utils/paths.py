"""Telling a local path from a hub id before anything is loaded."""

from __future__ import annotations

from pathlib import Path


def looks_local(name: str) -> bool:
    """A path, not a hub id (`name` or `org/name`): it starts with . / ~, ends with .ckpt, has more than one slash,
    or its first component is a directory here (`outputs/typo`). Such a path that does not exist is an error at
    once, instead of ~35 s of hub retries."""
    return name.startswith((".", "/", "~")) or name.endswith(".ckpt") or name.count("/") > 1 or \
        ("/" in name and Path(name.split("/", 1)[0]).is_dir())
