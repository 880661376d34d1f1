"""Wall-clock phase stamps of one benchmarked process, written as JSON. Standard library only: the transformers
`Trainer` side imports it, and must not pay for anything its own script would not import."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

# Set by the driver: where to write the stamps (one JSON object, rewritten at each stamp).
STAMPS_ENV = "BENCH_STAMPS"


def stamp(name: str, accumulate: bool = False) -> None:
    """Record `time.time()` under `name` (appended to a list when `accumulate`)."""
    path = os.environ.get(STAMPS_ENV)
    if not path:
        return
    stamps: dict[str, Any] = json.loads(Path(path).read_text()) if Path(path).exists() else {}
    if accumulate:
        stamps.setdefault(name, []).append(time.time())
    else:
        stamps[name] = time.time()
    Path(path).write_text(json.dumps(stamps))
