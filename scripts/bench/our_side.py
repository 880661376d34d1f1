"""`llm-train <overrides>` as the console script runs it, with a stamp once the entry point is imported."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.stamps import stamp  # noqa: E402
from lightning_llm.console_scripts import import_entry  # noqa: E402  (what the `llm-train` script runs)

entry = import_entry("lightning_llm.train")
stamp("imported")
sys.argv = ["llm-train", *sys.argv[1:]]
entry.run()
