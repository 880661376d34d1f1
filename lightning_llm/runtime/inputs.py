"""What the inference commands read: texts given on the command line or in a file, rows of JSONL/JSON/CSV files."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from lightning_llm.errors import UserError, require


def read_inline_or_file(inline: str | None, file: str | None, field: str) -> list[str]:
    """`<field>=...` (one text), or `<field>s_file`: one text per line (.txt) or JSON objects with a `<field>`
    key (.jsonl). Errors name the setting; no text or an empty one is refused."""
    key = f"{field}s_file"
    if inline is not None:
        texts = [str(inline)]
    else:
        path = Path(str(file))
        require(path.is_file(), f"{key}: file not found: {path}")
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        if path.suffix == ".jsonl":
            try:
                texts = [str(json.loads(line)[field]) for line in lines]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise UserError(f"{key}: {path} needs one JSON object with a '{field}' field per line "
                                f"({type(err).__name__})") from err
        else:
            texts = lines
    require(bool(texts), f"{key}: no {field}s in {file}")
    require(all(t.strip() for t in texts), f"{field}: empty {field}")
    return texts


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file, a JSON list of objects or a CSV/TSV file."""
    require(path.is_file(), f"input_file: file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
    if suffix == ".json":
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            doc = None
        if isinstance(doc, list) and all(isinstance(r, dict) for r in doc):
            return doc
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"input_file: {path}:{number} is not a JSON object ({err.msg})") from err
        require(isinstance(row, dict), f"input_file: {path}:{number} is not a JSON object")
        rows.append(row)
    return rows


def file_column(rows: list[dict[str, Any]], key: str, column: str, path: Path) -> list[Any]:
    missing = next((i for i, row in enumerate(rows) if column not in row), None)
    require(missing is None, f"{key}={column!r} is not a column of {path} (row {missing} has "
                             f"{', '.join(map(str, rows[missing].keys())) if missing is not None else ''})")
    return [row[column] for row in rows]


def text_lines(path: Path) -> list[str]:
    require(path.is_file(), f"input_file: file not found: {path}")
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def model_max_length(model: Any, tokenizer: Any, configured: int | None) -> int:
    limit = getattr(model.config, "max_position_embeddings", None) or 512
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if tok_limit and tok_limit < 1_000_000:
        limit = min(limit, tok_limit)
    return min(configured, limit) if configured else min(limit, 512)
