"""`llm-train <overrides>` as the console script runs it, with a stamp once the entry point is imported.
Started by real_shape.py as `python -m scripts.bench.our_side ...` from the repository root."""

import sys

from lightning_llm.train import main  # (what the `llm-train` script runs)
from scripts.bench.stamps import stamp

stamp("imported")
sys.argv = ["llm-train", *sys.argv[1:]]
main()
