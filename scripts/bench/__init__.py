"""Benchmarks printing ratios against the simplest alternatives: `python -m scripts.bench.run all` (see run.py)."""
