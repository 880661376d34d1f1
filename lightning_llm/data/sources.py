"""Raw data from the hub, local files or the bundled demo sets, with checks that name the offending key."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import datasets
from datasets import Dataset, DatasetDict, load_dataset

from lightning_llm.errors import UserError, first_line

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
SPLITS = ("train", "validation", "test")
_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "text",
             ".text": "text"}


def builder_for(path: str, key: str) -> str:
    """The `datasets` builder for a local file, from its extension."""
    suffix = Path(path).suffix.lower()
    if suffix not in _BUILDERS:
        raise UserError(f"{key}: unsupported file type {suffix or '(none)'!r} for {path} "
                        f"(use one of {', '.join(sorted(_BUILDERS))})")
    return _BUILDERS[suffix]


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """`datasets`' progress bars off for a block, restored afterwards (every caller of `load_raw`, not only the
    data module's prepare_data: a tokenizer trained on the files or a nested SQuAD file read them first)."""
    was = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was:
            datasets.enable_progress_bars()


def load_raw(*, dataset_name: str | None, dataset_config: str | None, files: dict[str, str | None],
             split_names: dict[str, str], cache_dir: str | None, bundled: dict[str, str]) -> DatasetDict:
    """Load train/validation/test splits; missing ones stay absent (validation may be carved out later)."""
    given = {split: path for split, path in files.items() if path}
    if dataset_name and given:
        raise UserError("data.dataset_name and data.train_file/validation_file/test_file are exclusive: give one")
    if dataset_name:
        return _load_hub(dataset_name, dataset_config, split_names, cache_dir)
    if not given:
        given = {split: str(BUNDLED_DIR / name) for split, name in bundled.items()}
    builders = set()
    for split, path in given.items():
        if not Path(path).is_file():
            raise UserError(f"data.{split}_file: file not found: {path}")
        if not Path(path).read_bytes()[:4096].strip():  # (an empty JSONL makes `datasets` raise StopIteration)
            raise UserError(f"data.{split}_file: {path} has no rows (the {split} split is empty)")
        builders.add(builder_for(path, f"data.{split}_file"))
    if len(builders) > 1:
        raise UserError(f"data.*_file: all files must share one format, got {sorted(builders)}")
    builder = builders.pop()
    kwargs: dict[str, Any] = {"delimiter": "\t"} if all(p.endswith(".tsv") for p in given.values()) else {}
    splits = {}
    for split, path in given.items():
        try:
            with _no_progress_bars():  # "Generating train split" bars for a local file read in about a second
                splits[split] = load_dataset(builder, data_files={split: str(Path(path).resolve())}, split=split,
                                             cache_dir=cache_dir, **kwargs)
        except Exception as err:  # pyarrow/pandas parse errors carry long messages
            if "corresponds to no data" in str(err):
                raise UserError(f"data.{split}_file: {path} has no rows (the {split} split is empty)") from err
            raise UserError(f"data.{split}_file: cannot read {path}: {first_line(err)}") from err
    return DatasetDict(splits)


def _load_hub(name: str, config: str | None, split_names: dict[str, str], cache_dir: str | None) -> DatasetDict:
    out = {}
    for split, hub_split in split_names.items():
        if not hub_split:
            continue
        try:
            out[split] = load_dataset(name, config, split=hub_split, cache_dir=cache_dir)
        except ValueError as err:
            if "Unknown split" in str(err) or "split" in str(err).lower():
                continue  # a missing validation/test split is carved from train later
            raise UserError(f"data.dataset_name={name!r}: {first_line(err)}") from err
        except Exception as err:
            raise UserError(f"data.dataset_name={name!r} (config {config!r}): cannot load: "
                            f"{first_line(err)}") from err
    if "train" not in out and "test" not in out:
        raise UserError(f"data.dataset_name={name!r}: none of the splits {dict(split_names)} exist")
    return DatasetDict(out)


def source_fingerprint(*, dataset_name: str | None, dataset_config: str | None, files: dict[str, str | None],
                       split_names: dict[str, str], bundled: dict[str, str]) -> dict[str, Any]:
    """What identifies the raw data for the tokenization cache: hub coordinates, or file paths+sizes+mtimes."""
    if dataset_name:
        return {"hub": dataset_name, "config": dataset_config, "splits": dict(split_names)}
    given = {s: p for s, p in files.items() if p} or {s: str(BUNDLED_DIR / n) for s, n in bundled.items()}
    out = {}
    for split, path in sorted(given.items()):
        stat = os.stat(path)
        out[split] = [str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]
    return out


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """The hex sha256 of a file's bytes, read in chunks (data files may not fit in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def data_fingerprints(*, dataset_name: str | None, dataset_config: str | None, files: dict[str, str | None],
                      split_names: dict[str, str | None], bundled: dict[str, str]) -> dict[str, Any]:
    """What identifies the data a model was trained and scored on, for results.json and a pushed model's card: the
    sha256, size and path of each file read (the bundled demo files when none was given), or the hub coordinates.
    Unlike `source_fingerprint` (a cache key: sizes and mtimes), the contents themselves."""
    if dataset_name:
        return {"hub": dataset_name, "config": dataset_config,
                "splits": {split: name for split, name in split_names.items() if name}}
    given = {s: p for s, p in files.items() if p}
    paths = given or {s: str(BUNDLED_DIR / n) for s, n in bundled.items()}
    paths = {split: paths[split] for split in SPLITS if split in paths}
    return {"files": {split: {"file": str(path), "bytes": os.stat(path).st_size, "sha256": sha256_file(path)}
                      for split, path in paths.items() if Path(path).is_file()},
            "bundled": not given}


def stable_hash(obj: Any) -> str:
    """A short, stable hash of a JSON-able object (cache keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def require_nonempty(ds: Dataset, split: str, key: str) -> None:
    if len(ds) == 0:
        raise UserError(f"{key}: the {split} split is empty")
