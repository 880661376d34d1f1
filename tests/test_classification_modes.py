"""model=bert_classifier beyond single-label: multi-label (lists of labels, BCE, micro/macro F1 and subset accuracy at
a threshold) and regression (a number per row, MSE, RMSE/MAE/Pearson/Spearman), inferred from the data or set with
model.problem_type. Each learns a small data set whose labels depend on words of the text far above the data's
baseline; its test metrics equal scikit-learn's / scipy's on the run's test predictions, and llm-predict writes the
same predictions for the test file."""

from __future__ import annotations

import csv
import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, mean_squared_error
from sklearn.preprocessing import MultiLabelBinarizer
from torchmetrics import CatMetric
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from lightning_llm.compress import compress
from lightning_llm.data.tokenizers import train_tokenizer
from lightning_llm.errors import UserError
from lightning_llm.explain import explain
from lightning_llm.predict import predict
from lightning_llm.tasks.classification import SequenceClassificationModule, TextClassificationDataModule
from lightning_llm.train import train
from tests.conftest import write_jsonl

TOPICS = {  # label -> phrases that say it; sports is in most rows, so its majority value is "on"
    "sports": ["the striker scored a late goal", "the coach praised the team", "fans filled the stadium",
               "the match went to extra time"],
    "politics": ["the minister announced a new tax", "parliament debated the budget", "voters went to the polls",
                 "the senator gave a long speech"],
    "tech": ["the startup released a new phone", "engineers fixed the software bug", "the new chip runs faster",
             "users downloaded the app"],
    "food": ["the chef cooked a spicy curry", "the bakery sold fresh bread", "diners loved the soup",
             "the recipe uses garlic"],
}
RATES = {"sports": 0.6, "politics": 0.35, "tech": 0.35, "food": 0.35}
FILLERS = ["yesterday", "according to reports", "in the city", "this week", "once again", "on monday"]
WEIGHTS = {"superb": 2.0, "great": 1.0, "fine": 0.5, "dull": -1.0, "awful": -2.0}  # regression: score words
SUBJECTS = ["the film", "the acting", "the plot", "the soundtrack", "the ending"]
# A small model from scratch that learns these in a few hundred steps (no dropout, no warmup, a high rate).
FAST = ["model.hidden_size=64", "model.num_hidden_layers=1", "model.num_attention_heads=2",
        "model.intermediate_size=128", "model.tokenizer_vocab_size=500", "model.dropout=0.0", "model.warmup_ratio=0.0",
        "model.learning_rate=5e-3", "data.max_length=48", "data.batch_size=8", "callbacks=none", "logger=none",
        "trainer.max_epochs=6"]


def _news(n: int, rng: random.Random) -> list[dict]:
    rows = []
    for _ in range(n):
        labels = [name for name in TOPICS if rng.random() < RATES[name]]
        parts = [rng.choice(TOPICS[name]) for name in labels] or ["nothing much happened"]
        rng.shuffle(parts)
        rows.append({"text": f"{' and '.join(parts)} {rng.choice(FILLERS)}", "topics": sorted(labels)})
    return rows


def _reviews(n: int, rng: random.Random) -> list[dict]:
    rows = []
    for _ in range(n):
        word = rng.choice(list(WEIGHTS))
        rows.append({"text": f"{rng.choice(SUBJECTS)} was {word} {rng.choice(FILLERS)}",
                     "score": round(WEIGHTS[word] + rng.gauss(0, 0.1), 3)})
    return rows


def _sentiment(n: int, rng: random.Random) -> list[dict]:
    return [{"text": row["text"], "label": "positive" if row["score"] > 0 else "negative"} for row in _reviews(n, rng)]


def _files(tmp_path: Path, make, sizes=(320, 80, 100)) -> dict[str, str]:
    rng = random.Random(0)
    return {split: write_jsonl(tmp_path / f"{split}.jsonl", make(n, rng))
            for split, n in zip(("train", "validation", "test"), sizes)}


def _data(files: dict[str, str], label_column: str) -> list[str]:
    return [f"data.train_file={files['train']}", f"data.validation_file={files['validation']}",
            f"data.test_file={files['test']}", "data.text_column=text", f"data.label_column={label_column}"]


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def predicted_probability(model_dir: Path, text: str, label: str) -> float:
    model, tokenizer = (AutoModelForSequenceClassification.from_pretrained(model_dir).eval(),
                        AutoTokenizer.from_pretrained(model_dir))
    with torch.no_grad():
        probs = model(**tokenizer(text, return_tensors="pt")).logits.sigmoid()[0]
    return float(probs[model.config.label2id[label]])


def _predict(compose_cfg, tmp_path: Path, files: dict[str, str]) -> list[dict]:
    out = tmp_path / "predictions.jsonl"
    cfg = compose_cfg([f"model_path={tmp_path / 'run' / 'hf_model'}", f"input_file={files['test']}",
                       f"output_file={out}", "device=cpu"], config_name="predict")
    predict(cfg)
    return _records(out)


def test_multi_label_learns_above_baseline_and_matches_sklearn(compose_cfg, tmp_path: Path) -> None:
    """Lists in the label column -> multi-label (inferred); the exported model keeps the label vocabulary; test
    F1 (micro, macro) and subset accuracy equal scikit-learn's on llm-predict's labels; val/f1_micro is far above
    the per-label-majority baseline."""
    files = _files(tmp_path, _news)
    cfg = compose_cfg([*FAST, *_data(files, "topics")])
    results = train(cfg)
    assert cfg.model.problem_type == "multi_label_classification"
    assert results["optimized_metric"]["name"] == "val/f1_micro_best"
    config = AutoConfig.from_pretrained(tmp_path / "run" / "hf_model")
    assert config.problem_type == "multi_label_classification"
    assert config.id2label == {0: "food", 1: "politics", 2: "sports", 3: "tech"}

    baseline = results["val"]["val/majority_f1_micro"]
    assert 0.2 < baseline < 0.6  # sports always on: the one label most rows carry
    assert results["val"]["val/f1_micro"] > baseline + 0.3

    # The run's own test predictions (in the file's row order) rescored by scikit-learn give its metrics.
    scored = _records(tmp_path / "run" / "predictions_test.jsonl")
    assert [r["row"] for r in scored] == list(range(100))
    binarizer = MultiLabelBinarizer(classes=sorted(TOPICS))
    y_true = binarizer.fit_transform([r["target"] for r in scored])
    y_pred = binarizer.transform([r["predicted"] for r in scored])
    test = results["test"]
    assert test["test/f1_micro"] == pytest.approx(f1_score(y_true, y_pred, average="micro"), abs=1e-6)
    assert test["test/f1_macro"] == pytest.approx(f1_score(y_true, y_pred, average="macro"), abs=1e-6)
    assert test["test/subset_acc"] == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-6)
    assert test["test/f1_micro"] > baseline + 0.3

    # llm-predict on the exported model: the labels above the threshold, every label's probability, and the same
    # scores against the file's own labels.
    predicted = _predict(compose_cfg, tmp_path, files)
    assert all(set(p["probabilities"]) == set(TOPICS) for p in predicted)
    assert all(p["labels"] == [n for n, v in p["probabilities"].items() if v > 0.5] for p in predicted)
    assert [p["labels"] for p in predicted] == [r["predicted"] for r in scored]  # what the run's evaluation wrote
    truth = binarizer.transform([r["topics"] for r in _records(Path(files["test"]))])
    assert f1_score(truth, binarizer.transform([p["labels"] for p in predicted]), average="micro") == \
        pytest.approx(test["test/f1_micro"], abs=1e-6)

    # llm-explain toward one label: its sigmoid probability, attributions summing to it (Captum's delta).
    hf = tmp_path / "run" / "hf_model"
    record, = explain(compose_cfg([f"model_path={hf}", "text='the chef cooked a spicy curry'", "target=food",
                                   "n_steps=16", f"output_dir={tmp_path / 'explain'}"], config_name="explain"))
    assert record["target_probability"] == pytest.approx(predicted_probability(hf, record["text"], "food"), abs=1e-5)
    assert abs(record["delta"]) < 0.1
    # llm-compress scores both models on the run's test split as training did: fp32 micro F1 is the run's.
    report = compress(compose_cfg([f"model_path={hf}", "data=text_classification", *_data(files, "topics"),
                                   f"output_dir={tmp_path / 'int8'}", "latency_batches=1", "latency_rounds=1"],
                                  config_name="compress"))["test"]
    assert report["metric"] == "f1_micro" and report["examples"] == len(scored)
    assert report["fp32_f1_micro"] == pytest.approx(test["test/f1_micro"], abs=1e-6)
    assert report["agreement"] >= 0.9 and report["int8_f1_micro"] > baseline + 0.3


def test_regression_learns_above_baseline_and_matches_sklearn_and_scipy(compose_cfg, tmp_path: Path) -> None:
    """Fractional numbers in the label column -> regression (inferred), one output; test MSE/RMSE/MAE equal
    scikit-learn's and Pearson/Spearman scipy's on llm-predict's values; val/rmse is a fraction of the RMSE of
    predicting the training mean."""
    files = _files(tmp_path, _reviews)
    cfg = compose_cfg([*FAST, *_data(files, "score")])
    results = train(cfg)
    assert cfg.model.problem_type == "regression"
    assert results["optimized_metric"]["name"] == "val/rmse_best"
    assert AutoConfig.from_pretrained(tmp_path / "run" / "hf_model").num_labels == 1

    baseline = results["val"]["val/mean_rmse"]
    assert baseline > 1.0
    assert results["val"]["val/rmse"] < 0.4 * baseline

    scored = _records(tmp_path / "run" / "predictions_test.jsonl")
    predicted, truth = np.array([r["predicted"] for r in scored]), np.array([r["target"] for r in scored])
    test = results["test"]
    mse = mean_squared_error(truth, predicted)
    assert test["test/mse"] == pytest.approx(mse, rel=1e-5)
    assert test["test/rmse"] == pytest.approx(math.sqrt(mse), rel=1e-5)
    assert test["test/mae"] == pytest.approx(mean_absolute_error(truth, predicted), rel=1e-5)
    assert test["test/pearson"] == pytest.approx(pearsonr(truth, predicted).statistic, abs=1e-5)
    assert test["test/spearman"] == pytest.approx(spearmanr(truth, predicted).statistic, abs=1e-5)
    np.testing.assert_allclose(truth, [r["score"] for r in _records(Path(files["test"]))], rtol=1e-6)

    # llm-predict: one number per text, the model's (to float noise: other batches, other padding).
    values = np.array([p["value"] for p in _predict(compose_cfg, tmp_path, files)])
    np.testing.assert_allclose(values, predicted, rtol=0, atol=1e-4)  # what the run's evaluation wrote, in order
    file_truth = np.array([r["score"] for r in _records(Path(files["test"]))])
    assert mean_squared_error(file_truth, values) == pytest.approx(mse, rel=1e-3)

    # llm-explain attributes the one output: the predicted number.
    record, = explain(compose_cfg([f"model_path={tmp_path / 'run' / 'hf_model'}", "text='the plot was superb'",
                                   "n_steps=16", f"output_dir={tmp_path / 'explain'}"], config_name="explain"))
    assert record["value"] == record["probability"] and record["value"] > 1.0
    assert max(zip(record["word_scores"], record["words"]))[1] == "superb"

    # llm-compress: fp32 test RMSE is the run's; int8's values stay close.
    report = compress(compose_cfg([f"model_path={tmp_path / 'run' / 'hf_model'}", "data=text_classification",
                                   *_data(files, "score"), f"output_dir={tmp_path / 'int8'}", "latency_batches=1",
                                   "latency_rounds=1"], config_name="compress"))["test"]
    assert report["metric"] == "rmse" and report["examples"] == len(scored)
    assert report["fp32_rmse"] == pytest.approx(test["test/rmse"], rel=1e-5)
    assert report["max_abs_difference"] < 0.3 and report["int8_rmse"] < 0.4 * baseline


def test_single_label_predictions_file_is_what_llm_predict_says(compose_cfg, tmp_path: Path) -> None:
    """Single-label: predictions_test.jsonl holds every test row in file order with the file's label; scikit-learn's
    accuracy and macro F1 on it are the run's; llm-predict on the export gives the same label for every row."""
    files = _files(tmp_path, _sentiment)
    results = train(compose_cfg([*FAST, "trainer.max_epochs=2", *_data(files, "label")]))
    scored = _records(tmp_path / "run" / "predictions_test.jsonl")
    rows = _records(Path(files["test"]))
    assert [r["row"] for r in scored] == list(range(len(rows))) and [r["target"] for r in scored] == \
        [r["label"] for r in rows]
    truth, labels = [r["target"] for r in scored], [r["predicted"] for r in scored]
    assert 0.6 < results["test"]["test/acc"] == pytest.approx(accuracy_score(truth, labels), abs=1e-6)
    assert results["test"]["test/f1"] == pytest.approx(f1_score(truth, labels, average="macro"), abs=1e-6)
    assert [p["label"] for p in _predict(compose_cfg, tmp_path, files)] == labels


@pytest.mark.parametrize(("make", "column", "problem_type", "message"), [
    (_reviews, "score", "multi_label_classification", "needs a list of labels per row"),
    (_news, "topics", "single_label_classification", "needs one label per row"),
    (_reviews, "score", "single_label_classification", "needs one label per row"),
], ids=["numbers_as_multi", "lists_as_single", "fractions_as_single"])
def test_explicit_problem_type_against_the_data_is_one_line(compose_cfg, tmp_path: Path, make, column: str,
                                                            problem_type: str, message: str) -> None:
    files = _files(tmp_path, make, sizes=(20, 5, 5))
    cfg = compose_cfg([*FAST, *_data(files, column), f"model.problem_type={problem_type}", ])
    with pytest.raises(UserError) as err:
        train(cfg)
    text = str(err.value)
    assert message in text and f"data.label_column={column!r}" in text and "row 0" in text and "\n" not in text


def test_csv_labels_split_on_label_separator_are_multi_label(tmp_path: Path) -> None:
    """A CSV cell `sports|food` with data.label_separator='|' is a list of labels; an empty cell, no label."""
    rows = [("a goal and a curry", "sports|food"), ("a new tax", "politics"), ("nothing happened", ""),
            ("fans ate bread", " food | sports ")]
    with open(tmp_path / "train.csv", "w", newline="") as f:
        csv.writer(f).writerows([("text", "label"), *rows])
    tokenizer = train_tokenizer((t for t, _ in rows), "wordpiece", 100, tmp_path / "tok")
    data = TextClassificationDataModule(tokenizer=tokenizer, train_file=str(tmp_path / "train.csv"),
                                        label_separator="|", val_fraction=0.25, cache_dir=str(tmp_path / "cache"))
    data.setup("fit")
    assert data.problem_type == "multi_label_classification" and data.label_names == ["food", "politics", "sports"]
    encoded = [*data.datasets["train"]["labels"], *data.datasets["validation"]["labels"]]
    assert sorted(map(tuple, encoded)) == [(0, 0, 0), (0, 1, 0), (1, 0, 1), (1, 0, 1)]
    assert data.model_kwargs()["num_labels"] == 3


@pytest.mark.slow  # CLI end to end: llm-train, llm-eval, llm-predict, llm-compress (~40-60 s on 2 cores)
def test_cli_multi_label_jsonl_train_eval_predict(run_cli, tmp_path: Path) -> None:
    files = _files(tmp_path, _news, sizes=(160, 40, 40))
    out = tmp_path / "mlrun"
    quick = [o for o in FAST if not o.startswith(("callbacks=", "logger=", "trainer.max_epochs"))]
    proc = run_cli("lightning_llm.train", *quick, *_data(files, "topics"), "trainer.max_epochs=2",
                   f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "vs per-label majority baseline" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["optimized_metric"]["name"] == "val/f1_micro_best"
    assert set(AutoConfig.from_pretrained(out / "hf_model").label2id) == set(TOPICS)

    proc = run_cli("lightning_llm.evaluate", f"ckpt_path={results['best_checkpoint']}",
                   f"hydra.run.dir={tmp_path / 'eval'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluated = json.loads((tmp_path / "eval" / "eval_results.json").read_text())["test"]
    for key in ("test/f1_micro", "test/f1_macro", "test/subset_acc", "test/loss"):
        assert evaluated[key] == pytest.approx(results["test"][key], rel=1e-5), key

    predictions = tmp_path / "predicted.jsonl"
    proc = run_cli("lightning_llm.predict", f"model_path={out}", f"input_file={files['test']}",
                   f"output_file={predictions}", "threshold=0.3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _records(predictions)
    assert len(rows) == 40 and all(r["labels"] == [n for n, p in r["probabilities"].items() if p > 0.3] for r in rows)

    proc = run_cli("lightning_llm.compress", f"model_path={out}", f"output_dir={tmp_path / 'int8'}",
                   "latency_batches=1", "latency_rounds=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test f1_micro (40)" in proc.stdout and "predictions agree on" in proc.stdout


@pytest.mark.parametrize(("problem_type", "predicted", "target", "record"), [
    ("regression", [1.5], [2.0], {"row": 0, "predicted": 1.5, "target": 2.0}),
    ("multi_label_classification", [[0.9, 0.2]], [[1.0, 1.0]], {"row": 0, "predicted": ["a"], "target": ["a", "b"]}),
    ("single_label_classification", [1], [0], {"row": 0, "predicted": "b", "target": "a"}),
], ids=["regression", "multi_label", "single_label"])
def test_a_stage_of_one_example_writes_one_prediction(problem_type: str, predicted: list, target: list,
                                                      record: dict) -> None:
    """A validation split of one row (a tiny file's val_fraction) still gives predictions_val.jsonl's one record:
    torchmetrics' CatMetric returns a 0-d tensor for one number."""
    module = SequenceClassificationModule(model_type="bert", vocab_size=8, num_labels=2, label_names=["a", "b"],
                                          problem_type=problem_type, hidden_size=16, num_hidden_layers=1,
                                          num_attention_heads=2, intermediate_size=32, max_position_embeddings=32)
    kept = {"predicted": CatMetric(), "target": CatMetric(), "row": CatMetric()}
    kept["predicted"].update(torch.tensor(predicted))
    kept["target"].update(torch.tensor(target))
    kept["row"].update(torch.tensor([0]))
    assert module._records(*(kept[name].compute() for name in ("predicted", "target", "row"))) == [record]


def _labels_module(tmp_path: Path, rows: list[dict], validation: list[dict] | None = None,
                   **kwargs: Any) -> TextClassificationDataModule:
    """A data module on `rows` (train file) and `validation` (default: the same rows), set up: what the labels
    were read as. Its own validation file, so error rows are file rows (a carved split is shuffled)."""
    files = {split: write_jsonl(tmp_path / f"{split}.jsonl", part)
             for split, part in (("train", rows), ("validation", validation or rows))}
    tokenizer = train_tokenizer((r["text"] for r in rows), "wordpiece", 100, tmp_path / "tok")
    data = TextClassificationDataModule(tokenizer=tokenizer, train_file=files["train"],
                                        validation_file=files["validation"], cache_dir=str(tmp_path / "cache"),
                                        **kwargs)
    data.setup("fit")
    return data


def test_whole_floats_are_regression_and_integer_label_lists_sort_as_numbers(tmp_path: Path) -> None:
    """`250000.0` is a price, not one of 250,001 classes; multi-label ids 2 and 10 sort as numbers."""
    prices = [{"text": f"a house with {n} rooms", "price": 100000.0 + 50000.0 * n} for n in range(8)]
    assert _labels_module(tmp_path / "a", prices, label_column="price").problem_type == "regression"
    tags = [{"text": f"row {n}", "tags": [2, 10] if n % 2 else [10]} for n in range(8)]
    assert _labels_module(tmp_path / "b", tags, label_column="tags").label_names == ["2", "10"]


def test_multi_label_class_label_ids_keep_their_declared_names(tmp_path: Path) -> None:
    """A Parquet file written by `datasets` with a `Sequence(ClassLabel)` column (a hub data set's shape): the
    declared names, encoded by id."""
    from datasets import ClassLabel, Dataset, Features, Sequence, Value

    features = Features({"text": Value("string"), "labels": Sequence(ClassLabel(names=["anger", "joy", "zeal"]))})
    rows = {"text": [f"text {n}" for n in range(8)], "labels": [[2], [0, 1], [1], [0], [2, 0], [1], [0], [2]]}
    Dataset.from_dict(rows, features=features).to_parquet(tmp_path / "train.parquet")
    tokenizer = train_tokenizer(iter(rows["text"]), "wordpiece", 100, tmp_path / "tok")
    data = TextClassificationDataModule(tokenizer=tokenizer, train_file=str(tmp_path / "train.parquet"),
                                        label_column="labels", val_fraction=0.25, cache_dir=str(tmp_path / "cache"))
    data.setup("fit")
    assert data.problem_type == "multi_label_classification" and data.label_names == ["anger", "joy", "zeal"]
    hot = sorted(map(tuple, [*data.datasets["train"]["labels"], *data.datasets["validation"]["labels"]]))
    assert hot == sorted(tuple(float(i in ids) for i in range(3)) for ids in rows["labels"])


@pytest.mark.parametrize(("rows", "kwargs", "message"), [
    ([{"text": f"t {n}", "score": float(n)} for n in range(8)],
     {"validation": [{"text": f"t {n}", "score": -1.0} for n in range(4)]},
     "every label of the validation split is -1.0 (unlabeled validation split? set data.validation_split=null)"),
    ([{"text": f"t {n}", "score": "n/a" if n == 5 else str(n / 2)} for n in range(8)], {"problem_type": "regression"},
     "row 5 holds 'n/a': model.problem_type=regression needs a number per row"),
    ([{"text": f"t {n}", "topics": []} for n in range(8)], {"problem_type": "multi_label_classification"},
     "no labels in the train split (every row's list is empty)"),
    ([{"text": f"t {n}", "topics": ["a"]} for n in range(8)], {"validation": [{"text": "t", "topics": "a"}]},
     "holds string values: model.problem_type=multi_label_classification (inferred from the train split) needs a "
     "list of labels per row (a string of several labels: set data.label_separator)"),
], ids=["constant_eval_labels", "unreadable_number", "no_labels", "inferred_then_mismatch"])
def test_labels_that_cannot_be_used_are_one_line(tmp_path: Path, rows: list[dict], kwargs: dict,
                                                 message: str) -> None:
    column = next(key for key in rows[0] if key != "text")
    with pytest.raises(UserError) as err:
        _labels_module(tmp_path, rows, label_column=column, **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_a_nan_prediction_keeps_every_row_in_place() -> None:
    """A diverged regression model's NaN stays in its row (CatMetric's default drops NaN, shifting later rows)."""
    module = SequenceClassificationModule(model_type="bert", vocab_size=8, num_labels=1, problem_type="regression",
                                          hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                          intermediate_size=32, max_position_embeddings=32)
    kept = module.make_metrics()
    kept["predicted"].update(torch.tensor([1.0, float("nan"), 3.0]))
    kept["target"].update(torch.tensor([1.5, 2.5, 3.5]))
    kept["row"].update(torch.tensor([2, 0, 1]))
    records = module._records(*(kept[name].compute() for name in ("predicted", "target", "row")))
    assert [r["row"] for r in records] == [0, 1, 2] and math.isnan(records[0]["predicted"])
    assert [r["target"] for r in records] == [2.5, 3.5, 1.5] and records[1]["predicted"] == 3.0
