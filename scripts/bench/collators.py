"""Our padding collators against the transformers collators they replace, on the bundled demo data: milliseconds
per batch and the ratio transformers / ours, after checking that both give the same tensors.

    python -m scripts.bench.collators
    python -m scripts.bench.collators --batch-size 64 --rounds 20

- classification: `PaddingCollator` vs `DataCollatorWithPadding` (review rows, sequence labels);
- NER: `TaggingCollator` vs `DataCollatorForTokenClassification` (tagged sentences, labels padded with -100).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding

from lightning_llm.data.padding import PaddingCollator
from lightning_llm.data.tokenizers import train_tokenizer
from lightning_llm.tasks.token_classification import TaggingCollator

BUNDLED = Path(__file__).resolve().parents[2] / "lightning_llm" / "data" / "bundled"


def review_features(tokenizer: Any) -> list[dict[str, Any]]:
    with open(BUNDLED / "reviews_train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    names = sorted({r["label"] for r in rows})
    encoded = tokenizer([r["text"] for r in rows], truncation=True, max_length=128)
    return [{**{k: v[i] for k, v in encoded.items()}, "labels": names.index(r["label"])} for i, r in enumerate(rows)]


def ner_features(tokenizer: Any) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (BUNDLED / "ner_train.jsonl").read_text().splitlines()]
    names = sorted({tag for r in rows for tag in r["tags"]})
    encoded = tokenizer([r["tokens"] for r in rows], is_split_into_words=True, truncation=True, max_length=128)
    features = []
    for i, row in enumerate(rows):
        words, previous, labels = encoded.word_ids(i), None, []
        for word in words:
            labels.append(-100 if word is None or word == previous else names.index(row["tags"][word]))
            previous = word
        features.append({**{k: v[i] for k, v in encoded.items()}, "labels": labels})
    return features


def ms_per_batch(collate: Callable[[list[dict[str, Any]]], Any], batches: list[list[dict[str, Any]]],
                 rounds: int) -> float:
    """Median over rounds of the mean time per batch (one untimed pass first)."""
    for batch in batches:
        collate(batch)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for batch in batches:
            collate(batch)
        times.append((time.perf_counter() - start) / len(batches))
    return 1000 * statistics.median(times)


def compare(name: str, ours: Callable, theirs: Callable, features: list[dict[str, Any]], batch_size: int,
            rounds: int) -> None:
    batches = [features[i:i + batch_size] for i in range(0, len(features), batch_size)]
    for batch in batches:
        mine, reference = ours([dict(f) for f in batch]), theirs([dict(f) for f in batch])
        for key, value in reference.items():
            if not torch.equal(mine[key], value.to(mine[key].dtype)):
                raise SystemExit(f"{name}: {key} differs between the collators")
    our_ms = ms_per_batch(ours, batches, rounds)
    their_ms = ms_per_batch(theirs, batches, rounds)
    print(f"{name}: ours {our_ms:.3f} ms, transformers {their_ms:.3f} ms per batch of {batch_size} "
          f"({len(batches)} batches, same tensors): transformers / ours {their_ms / our_ms:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        with open(BUNDLED / "reviews_train.csv", newline="") as f:
            texts = [r["text"] for r in csv.DictReader(f)]
        texts += [" ".join(json.loads(line)["tokens"]) for line in (BUNDLED / "ner_train.jsonl").read_text().splitlines()]
        tokenizer = train_tokenizer(iter(texts), "wordpiece", 4000, Path(tmp) / "tokenizer")
    compare("classification", PaddingCollator(tokenizer), DataCollatorWithPadding(tokenizer),
            review_features(tokenizer), args.batch_size, args.rounds)
    compare("NER", TaggingCollator(tokenizer), DataCollatorForTokenClassification(tokenizer),
            ner_features(tokenizer), args.batch_size, args.rounds)


if __name__ == "__main__":
    main()
