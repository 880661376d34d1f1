"""`llm-train <overrides>` as the console script runs it, with a stamp once the entry point is imported."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning_llm.train as entry  # noqa: E402  (what `llm-train` imports)
from bench.stamps import stamp  # noqa: E402

stamp("imported")
sys.argv = ["llm-train", *sys.argv[1:]]
entry.main()
