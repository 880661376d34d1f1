"""The configs `llm-*` compose (conf/), their schema and the checks that run before any work."""

from pathlib import Path

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")
