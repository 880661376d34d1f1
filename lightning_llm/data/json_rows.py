"""Data modules whose rows are nested JSON (conversations, preference pairs): local .json/.jsonl files are read
row by row, each row kept as its JSON text, so that a row of the wrong shape is reported by its number instead of
failing Arrow's type inference for the whole file. Other sources (parquet, the hub) load as usual."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict

from lightning_llm.data.base import CachedTextDataModule
from lightning_llm.data.sources import BUNDLED_DIR
from lightning_llm.errors import UserError, first_line

ROW_TEXT = "_row"  # the column holding each row's JSON text


class JsonRowsDataModule(CachedTextDataModule):
    """A CachedTextDataModule whose raw splits are read with `json_rows` and iterated with `rows`."""

    def load_raw(self) -> DatasetDict:
        given = {s: p for s, p in self.files.items() if p}
        if self.dataset_name or not given:
            given = {} if self.dataset_name else {s: str(BUNDLED_DIR / n) for s, n in self.bundled_files().items()}
        if not given or any(Path(p).suffix.lower() not in (".json", ".jsonl") for p in given.values()):
            return super().load_raw()
        splits = {}
        for split, path in given.items():
            if not Path(path).is_file():
                raise UserError(f"data.{split}_file: file not found: {path}")
            splits[split] = Dataset.from_dict({ROW_TEXT: list(json_rows(split, path))})
        return self.with_validation(DatasetDict(splits))

    @staticmethod
    def rows(ds: Dataset) -> Iterator[Any]:
        """A split's rows as Python objects, whichever way it was loaded."""
        if ROW_TEXT in ds.column_names:
            for batch in ds.iter(batch_size=1000):
                yield from (json.loads(r) for r in batch[ROW_TEXT])
        else:
            yield from ds


def json_rows(split: str, path: str) -> Iterator[str]:
    """Each row's JSON text (a .json array, or JSON lines), a line that is not JSON failing with its number."""
    text = Path(path).read_text()
    if Path(path).suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"data.{split}_file: {path} is not valid JSON: {first_line(err)}") from err
        yield from (json.dumps(r) for r in rows)
        return
    count = 0
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"data.{split}_file: {path} line {n} is not JSON: {first_line(err)}") from err
            count += 1
            yield line
    if not count:
        raise UserError(f"data.{split}_file: {path} has no rows (the {split} split is empty)")
