"""Bad input: one clear line naming the problem, a non-zero exit, no traceback, no results.json."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from lightning_llm.data.sources import load_raw
from lightning_llm.errors import UserError
from lightning_llm.evaluate import evaluate
from lightning_llm.train import train
from tests.conftest import TINY_BERT


def _csv(path: Path, rows: list[list], header: list[str]) -> str:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return str(path)


def test_cli_missing_file(run_cli, tmp_path: Path) -> None:
    # (A misspelled key from the command line: tests/test_precheck.py.)
    for args, needle in [([f"data.train_file={tmp_path}/nope.csv"], "data.train_file: file not found")]:
        proc = run_cli("lightning_llm.train", *args, f"hydra.run.dir={tmp_path / 'run'}")
        assert proc.returncode != 0
        assert needle in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr + proc.stdout
        assert not (tmp_path / "run" / "results.json").exists()


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    rows = [[f"good film number {i}", "pos"] if i % 2 else [f"bad film number {i}", "neg"] for i in range(40)]
    int_rows = [[text, 1 if label == "pos" else 5] for text, label in rows]
    return {"train": _csv(tmp_path / "train.csv", rows, ["text", "label"]),
            "int_train": _csv(tmp_path / "int.csv", int_rows, ["text", "label"]),
            "empty": _csv(tmp_path / "empty.csv", [], ["text", "label"]),
            "unlabeled": _csv(tmp_path / "unlabeled.csv", [[text, ""] for text, _ in rows[:4]], ["text", "label"]),
            "negative": _csv(tmp_path / "negative.csv", [[text, -1] for text, _ in rows[:4]], ["text", "label"]),
            "txt": str(tmp_path / "a.txt")}


@pytest.mark.parametrize("overrides, message", [
    (lambda f: [f"data.train_file={f['train']}", "data.text_column=body"], "data.text_column='body'"),
    (lambda f: [f"data.train_file={f['train']}", "data.label_column=y"], "data.label_column='y'"),
    (lambda f: [f"data.train_file={f['int_train']}", "model.num_labels=3", "test=false"], "outside model.num_labels=3"),
    (lambda f: [f"data.train_file={f['train']}", f"data.test_file={f['empty']}"], "the test split is empty"),
    (lambda f: [f"data.train_file={f['train']}", f"data.test_file={f['unlabeled']}"],
     "the test split has missing or negative labels"),
    (lambda f: [f"data.train_file={f['int_train']}", f"data.test_file={f['negative']}", "model.num_labels=6"],
     "the test split has missing or negative labels"),
    (lambda f: ["model.pretrained_model_name_or_path=./no/such/model"], "directory not found: ./no/such/model"),
    (lambda f: ["model=gpt"], "cannot train on data"),
    (lambda f: ["model.learning_rate=0.1", "+callbacks.evil._target_=os.system"], "is not allowed"),
], ids=["text_column", "label_column", "label_range", "empty_split", "unlabeled_split", "negative_label",
        "model_dir", "task_pair", "target"])
def test_bad_input_is_one_clear_line(compose_cfg, files, tmp_path: Path, overrides, message) -> None:
    cfg = compose_cfg([*TINY_BERT, "logger=none", "trainer.max_epochs=1", *overrides(files)])
    with pytest.raises(UserError) as err:
        train(cfg)
    assert message in str(err.value)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run" / "results.json").exists()


def test_empty_jsonl_split_is_named(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text('{"text": "a good film", "label": 1}\n')
    (tmp_path / "test.jsonl").write_text("\n")
    with pytest.raises(UserError, match=r"^data.test_file: .*test.jsonl has no rows \(the test split is empty\)$"):
        load_raw(dataset_name=None, dataset_config=None, cache_dir=str(tmp_path / "cache"), bundled={},
                 files={"train": str(tmp_path / "train.jsonl"), "validation": None,
                        "test": str(tmp_path / "test.jsonl")},
                 split_names={"train": "train", "validation": "validation", "test": "test"})


def test_eval_without_ckpt_path_is_one_line(compose_cfg) -> None:
    # conf/eval.yaml leaves ckpt_path ??? : reading it raised OmegaConf's MissingMandatoryValue, a Hydra traceback.
    with pytest.raises(UserError, match=r"^ckpt_path: required \(a \.ckpt file written by llm-train\)$"):
        evaluate(compose_cfg([], "eval"))
