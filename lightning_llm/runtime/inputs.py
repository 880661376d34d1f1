"""The texts an inference command reads: one given on the command line, or a file of them."""

from __future__ import annotations

import json
from pathlib import Path

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
