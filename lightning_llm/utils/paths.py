"""Paths: telling a local path from a hub id before anything is loaded, and where the per-user cache lives."""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir() -> str:
    """Tokenizers and tokenized data shared by a user's runs wherever they start (`paths.cache_dir`):
    $LIGHTNING_LLM_CACHE, else $XDG_CACHE_HOME/lightning_llm, else ~/.cache/lightning_llm. Not the current directory:
    each directory a user ran from got its own cache, and a read-only one failed."""
    if os.environ.get("LIGHTNING_LLM_CACHE"):
        return os.environ["LIGHTNING_LLM_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "lightning_llm")


def looks_local(name: str) -> bool:
    """A path, not a hub id (`name` or `org/name`): it starts with . / ~, ends with .ckpt, has more than one slash,
    or its first component is a directory here (`outputs/typo`). Such a path that does not exist is an error at
    once, instead of ~35 s of hub retries."""
    return name.startswith((".", "/", "~")) or name.endswith(".ckpt") or name.count("/") > 1 or \
        ("/" in name and Path(name.split("/", 1)[0]).is_dir())
