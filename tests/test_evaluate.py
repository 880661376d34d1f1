"""`llm-eval`: the run's saved data config with command-line `data.*` keys on top, labels encoded through the
checkpoint's own names (never re-derived from the new file), only the test split loaded."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from lightning_llm.data.tokenizers import train_tokenizer
from lightning_llm.errors import UserError
from lightning_llm.evaluate import evaluate
from lightning_llm.runtime.argv import data_keys_onto_saved_config
from lightning_llm.tasks.classification import TextClassificationDataModule
from lightning_llm.tasks.token_classification import TokenClassificationDataModule
from lightning_llm.train import train
from tests.conftest import REPO, TINY_BERT, compose_run_config, write_jsonl

REVIEWS = REPO / "lightning_llm" / "data" / "bundled" / "reviews_train.csv"
# Three string labels; the model's ids follow their sorted order: bad=0, good=1, meh=2.
SENTIMENT = {"positive": "good", "negative": "bad"}


def _rows(start: int, n: int) -> list[tuple[str, str]]:
    rows = list(csv.reader(open(REVIEWS)))[1 + start:1 + start + n]
    return [(text, "meh" if i % 4 == 0 else SENTIMENT[label]) for i, (text, label) in enumerate(rows)]


def _write(path: Path, rows: list[tuple[str, str]]) -> str:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([("review", "grade"), *rows])
    return str(path)


def _reordered_subset(rows: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """`meh` and `good` rows only, a `meh` first: re-derived (sorted) names would make good=0, meh=1."""
    kept = [r for r in rows if r[1] != "bad"]
    first = next(r for r in kept if r[1] == "meh")
    return [first, *(r for r in kept if r is not first)]


def test_eval_on_a_reordered_label_subset_scores_as_the_training_runs_test(tmp_path: Path) -> None:
    test_rows = _reordered_subset(_rows(200, 40))
    assert test_rows[0][1] == "meh" and {label for _, label in test_rows} == {"meh", "good"}
    files = {"train": _write(tmp_path / "train.csv", _rows(0, 96)),
             "validation": _write(tmp_path / "validation.csv", _rows(100, 24)),
             "test": _write(tmp_path / "test.csv", test_rows)}
    run = tmp_path / "run"
    cfg = compose_run_config(run, [*TINY_BERT, "trainer.max_epochs=2", "data.batch_size=16", "export=false",
                                   "logger=none", "data.text_column=review", "data.label_column=grade",
                                   *(f"data.{split}_file={path}" for split, path in files.items())])
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")  # what Hydra saves for a CLI run
    trained = train(cfg)
    GlobalHydra.instance().clear()

    # A teammate's copy of the test rows; the training files are gone, so loading a train split would fail.
    new_test = shutil.copy(files["test"], tmp_path / "new_test.csv")
    for split in ("train", "validation", "test"):
        Path(files[split]).unlink()
    eval_cfg = compose_run_config(tmp_path / "eval", [f"ckpt_path={trained['best_checkpoint']}",
                                                      *data_keys_onto_saved_config([f"data.test_file={new_test}"])],
                                  config_name="eval")
    evaluated = evaluate(eval_cfg)
    GlobalHydra.instance().clear()
    assert evaluated["test"] == trained["test"]  # same weights, same rows, same label ids: identical
    saved = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    assert saved["test"] == pytest.approx(trained["test"], rel=1e-12)


def test_data_keys_become_additions_to_the_saved_config_unless_an_option_is_chosen() -> None:
    argv = ["ckpt_path=x", "data.test_file=t.csv", "+data.max_length=16", "hardware=cpu"]
    assert data_keys_onto_saved_config(argv) == ["ckpt_path=x", "+data.test_file=t.csv", "+data.max_length=16",
                                                 "hardware=cpu"]
    chosen = ["ckpt_path=x", "data=text_classification", "data.test_file=t.csv"]
    assert data_keys_onto_saved_config(chosen) == chosen


def _test_only(tmp_path: Path, rows: list[tuple[str, str]], label_names: list[str]) -> TextClassificationDataModule:
    tokenizer = train_tokenizer((text for text, _ in _rows(0, 50)), "wordpiece", 200, tmp_path / "tok")
    dm = TextClassificationDataModule(tokenizer=tokenizer, cache_dir=str(tmp_path / "cache"), text_column="review",
                                      label_column="grade", label_names=label_names, splits=("test",),
                                      test_file=_write(tmp_path / "test.csv", rows))
    dm.setup("test")
    return dm


def test_checkpoint_label_names_encode_a_test_file_with_some_classes(tmp_path: Path, capsys) -> None:
    rows = [("fine", "meh"), ("great", "good"), ("so so", "meh")]
    dm = _test_only(tmp_path, rows, ["bad", "good", "meh"])
    assert set(dm.datasets) == {"test"}
    assert dm.datasets["test"]["labels"] == [2, 1, 2]
    assert dm.model_kwargs() == {"num_labels": 3, "label_names": ["bad", "good", "meh"],
                                 "problem_type": "single_label_classification", "baseline_score": None}
    warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warning == [f"warning: data (test split, {tmp_path / 'test.csv'}) has no rows labelled ['bad'] "
                       f"(1 of the 3 labels ['bad', 'good', 'meh'])"]


def test_a_label_the_model_does_not_know_is_one_error_naming_it_and_the_file(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        _test_only(tmp_path, [("fine", "meh"), ("awful", "terrible")], ["bad", "good", "meh"])
    message = str(err.value)
    assert "['terrible']" in message and str(tmp_path / "test.csv") in message and "\n" not in message, message


def test_checkpoint_tag_names_encode_a_test_file_with_some_tags(tmp_path: Path, capsys) -> None:
    """Token classification the same way: the model's tag ids, whatever subset and order the file holds."""
    names = ["B-LOC", "B-PER", "I-PER", "O"]
    rows = [{"tokens": ["anna", "smith", "slept"], "tags": ["B-PER", "I-PER", "O"]}, {"tokens": ["ok"], "tags": ["O"]}]
    path = write_jsonl(tmp_path / "test.jsonl", rows)
    tokenizer = train_tokenizer(iter(["anna smith slept ok"] * 5), "wordpiece", 100, tmp_path / "tok")
    dm = TokenClassificationDataModule(tokenizer=tokenizer, cache_dir=str(tmp_path / "cache"), label_names=names,
                                       splits=("test",), test_file=path)
    dm.setup("test")
    assert set(dm.datasets) == {"test"}
    assert [[t for t in labels if t != -100] for labels in dm.datasets["test"]["labels"]] == [[1, 2, 3], [3]]
    assert "has no words tagged ['B-LOC']" in capsys.readouterr().err


@pytest.mark.slow
def test_readme_eval_commands_on_another_test_file(run_cli, tmp_path: Path) -> None:
    """README's `llm-eval ckpt_path=... data.test_file=...` (saved data config) and `data=text_classification
    data.test_file=...` (the group option) on a one-class file of the bundled run's labels: exit 0, the same
    metrics, one warning line about the missing class."""
    run = tmp_path / "run"
    proc = run_cli("lightning_llm.train", *TINY_BERT, "trainer.max_epochs=1", "logger=none", "export=false",
                   f"paths.output_dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    best = json.loads((run / "results.json").read_text())["best_checkpoint"]
    bundled = list(csv.reader(open(REPO / "lightning_llm/data/bundled/reviews_test.csv")))
    with open(tmp_path / "test2.csv", "w", newline="") as f:
        csv.writer(f).writerows([bundled[0], *(row for row in bundled[1:] if row[1] == "positive")])
    scores = []
    for option in ([], ["data=text_classification"]):
        out = tmp_path / f"eval{len(option)}"
        proc = run_cli("lightning_llm.evaluate", f"ckpt_path={best}", *option, "data.test_file=test2.csv",
                       f"paths.output_dir={out}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert [line for line in proc.stderr.splitlines() if line.startswith("warning: data")] == [
            "warning: data (test split, test2.csv) has no rows labelled ['negative'] (1 of the 2 labels "
            "['negative', 'positive'])"]
        scores.append(json.loads((out / "eval_results.json").read_text())["test"])
    assert scores[0] == scores[1]
