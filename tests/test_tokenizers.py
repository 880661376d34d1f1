"""A tokenizer trained from scratch is a function of its corpus: the same text gives the same vocabulary in every
process, so a seeded run on a cold cache equals the same run on a warm one."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from lightning_llm.data.sources import BUNDLED_DIR
from lightning_llm.data.tokenizers import train_tokenizer

REPO = Path(__file__).resolve().parents[1]


def vocab_hashes(corpus: str | Path) -> list[str]:
    """(kind, size, vocabulary hash) of each tokenizer kind the tasks train, on the `text` column of `corpus`."""
    with open(corpus) as file:
        texts = [row["text"] for row in csv.DictReader(file)]
    lines = []
    for kind in ("wordpiece", "bpe", "sentencepiece"):
        with tempfile.TemporaryDirectory() as cache:
            vocab = train_tokenizer(texts, kind, 400, cache).get_vocab()
        lines.append(f"{kind} {len(vocab)} {hashlib.sha256(json.dumps(vocab, sort_keys=True).encode()).hexdigest()}")
    return lines


def test_tokenizer_training_gives_the_same_vocabulary_in_every_process(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.csv"
    with open(BUNDLED_DIR / "reviews_train.csv") as src, open(corpus, "w", newline="") as dst:
        writer = csv.DictWriter(dst, fieldnames=["text"])
        writer.writeheader()
        writer.writerows({"text": row["text"]} for row in list(csv.DictReader(src))[:600])
    # A second process: the trainers' hash maps are seeded per process (wordpiece differed there before the fix,
    # huggingface/tokenizers#1794).
    script = "import sys; from tests.test_tokenizers import vocab_hashes; print(*vocab_hashes(sys.argv[1]), sep='\\n')"
    other = subprocess.run([sys.executable, "-c", script, str(corpus)], capture_output=True, text=True, timeout=120,
                           cwd=REPO, env={**os.environ, "PYTHONHASHSEED": "1"})
    assert other.returncode == 0, other.stderr[-2000:]
    here = vocab_hashes(corpus)
    assert len(here) == 3 and other.stdout.splitlines() == here
