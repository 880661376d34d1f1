"""The JSON row reader shared by the chat and preference data (data/json_rows.py): rows of any shape load, each
kept as its JSON text; a line that is not JSON, a broken .json array or an empty file fails in one line naming
the file (and the line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_llm.errors import UserError
from lightning_llm.tasks.chat import ChatDataModule
from lightning_llm.tasks.dpo import PreferenceDataModule

ROWS = {
    ChatDataModule: [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
                     {"prompt": "2+2?", "completion": "4"}],  # two shapes Arrow could not put in one column
    PreferenceDataModule: [{"prompt": "2+2?", "chosen": "4", "rejected": "5"},
                           {"prompt": [{"role": "user", "content": "hi"}],
                            "chosen": [{"role": "assistant", "content": "hello"}],
                            "rejected": [{"role": "assistant", "content": "go away"}]}],
}


def loaded_rows(datamodule_class: type, train: Path) -> list:
    dm = datamodule_class(train_file=str(train), validation_file=str(train), test_file=None)
    return list(dm.rows(dm.load_raw()["train"]))


@pytest.mark.parametrize("datamodule_class", list(ROWS), ids=lambda c: c.__name__)
def test_rows_of_mixed_shapes_load_as_written(tmp_path: Path, datamodule_class: type) -> None:
    rows = ROWS[datamodule_class]
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n\n" for r in rows))  # blank lines are skipped
    array = tmp_path / "train.json"
    array.write_text(json.dumps(rows))
    assert loaded_rows(datamodule_class, jsonl) == rows
    assert loaded_rows(datamodule_class, array) == rows


@pytest.mark.parametrize("datamodule_class", list(ROWS), ids=lambda c: c.__name__)
def test_unreadable_files_fail_naming_file_and_line(tmp_path: Path, datamodule_class: type) -> None:
    broken = tmp_path / "train.jsonl"
    broken.write_text(json.dumps(ROWS[datamodule_class][0]) + "\n\n{'prompt': 'single quotes'}\n")
    with pytest.raises(UserError, match=rf"^data.train_file: {broken} line 3 is not JSON: Expecting property name"):
        loaded_rows(datamodule_class, broken)
    array = tmp_path / "train.json"
    array.write_text("[" + json.dumps(ROWS[datamodule_class][0]) + ",]")
    with pytest.raises(UserError, match=rf"^data.train_file: {array} is not valid JSON: "):
        loaded_rows(datamodule_class, array)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(UserError, match=rf"^data.train_file: {empty} has no rows \(the train split is empty\)$"):
        loaded_rows(datamodule_class, empty)
    with pytest.raises(UserError, match=rf"^data.train_file: file not found: {tmp_path / 'nope.jsonl'}$"):
        loaded_rows(datamodule_class, tmp_path / "nope.jsonl")
