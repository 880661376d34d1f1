"""BERT-style classification end to end: training learns, export round-trips, eval reproduces test metrics."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
)

from lightning_llm.data.tokenizers import train_tokenizer
from lightning_llm.runtime.checkpoints import load_module
from lightning_llm.train import train
from tests.conftest import TINY_BERT


def test_fast_dev_run_trains_on_cpu(compose_cfg) -> None:
    results = train(compose_cfg([*TINY_BERT, "debug=fdr"]))
    assert results["status"] == "completed"
    assert "test/acc" in results["test"]


def test_tiny_model_learns(compose_cfg, tmp_path: Path) -> None:
    """Loss falls and accuracy rises well above chance on the bundled reviews within a few hundred steps."""
    cfg = compose_cfg(["experiment=classify_demo", "trainer.max_epochs=2", "data.max_length=48",
                       "callbacks.early_stopping=null"])
    results = train(cfg)
    rows = list(csv.DictReader(open(tmp_path / "run" / "csv" / "metrics.csv")))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) >= 6
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3
    assert results["val"]["val/acc"] > 0.85  # chance is 0.5
    assert results["optimized_metric"] == {"name": "val/acc_best", "value": results["val"]["val/acc_best"]}


def test_results_val_is_the_best_checkpoints_and_val_last_the_last_validation(compose_cfg, tmp_path: Path) -> None:
    """A monitor preferring an early validation (the highest val/loss): results.json `val` holds that
    validation's metrics (the weights `test` scores), `val_last` the last validation's, and the optimized
    val/acc_best stays the best over all validations."""
    cfg = compose_cfg([*TINY_BERT, "trainer.max_epochs=3", "++trainer.limit_train_batches=5",
                       "++trainer.limit_val_batches=3", "++trainer.limit_test_batches=1", "data.batch_size=8",
                       "monitor.metric=val/loss", "monitor.mode=max", "callbacks.early_stopping=null", "export=false"])
    results = train(cfg)
    rows = [r for r in csv.DictReader(open(tmp_path / "run" / "csv" / "metrics.csv")) if r.get("val/loss")]
    assert len(rows) == 3
    best = max(rows, key=lambda r: float(r["val/loss"]))
    assert best is not rows[-1] and f"epoch{int(best['epoch']):02d}" in results["best_checkpoint"]
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    for key in ("val/loss", "val/acc", "val/f1"):
        assert saved["val"][key] == pytest.approx(float(best[key]), rel=1e-6), key
        assert saved["val_last"][key] == pytest.approx(float(rows[-1][key]), rel=1e-6), key
    assert saved["val"]["val/loss"] != saved["val_last"]["val/loss"]
    assert saved["optimized_metric"] == {"name": "val/acc_best",
                                         "value": pytest.approx(max(float(r["val/acc"]) for r in rows), rel=1e-6)}


def _write_csv(path: Path, rows: list[tuple[str, str]], header: tuple[str, str] = ("sentence", "sentiment")) -> str:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


@pytest.fixture
def user_files(tmp_path: Path) -> dict[str, str]:
    """A user's own CSVs (other column names, string labels) and a pretrained model folder."""
    bundled = list(csv.reader(open(Path(__file__).parents[1] / "lightning_llm/data/bundled/reviews_train.csv")))[1:]
    rows = [(text, {"positive": "good", "negative": "bad"}[label]) for text, label in bundled[:240]]
    files = {split: _write_csv(tmp_path / f"{split}.csv", part)
             for split, part in [("train", rows[:160]), ("validation", rows[160:200]), ("test", rows[200:])]}
    tokenizer = train_tokenizer((t for t, _ in rows), "wordpiece", 300, tmp_path / "tok")
    model = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=64))
    model.save_pretrained(tmp_path / "pretrained")
    tokenizer.save_pretrained(tmp_path / "pretrained")
    files["model"] = str(tmp_path / "pretrained")
    return files


@pytest.mark.slow  # a CLI end-to-end run (~15-45 s on 2 cores)
def test_user_csv_and_pretrained_dir_export_and_eval(run_cli, user_files, tmp_path: Path) -> None:
    out = tmp_path / "myrun"
    args = [f"model.pretrained_model_name_or_path={user_files['model']}", f"data.train_file={user_files['train']}",
            f"data.validation_file={user_files['validation']}", f"data.test_file={user_files['test']}",
            "data.text_column=sentence", "data.label_column=sentiment", "trainer.max_epochs=2",
            f"hydra.run.dir={out}"]
    proc = run_cli("lightning_llm.train", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    for part in (".hydra/config.yaml", "checkpoints/last.ckpt", "hf_model/model.safetensors",
                 "hf_model/tokenizer.json", "csv/metrics.csv"):
        assert (out / part).exists(), part
    best = Path(results["best_checkpoint"])
    assert best.parent == out / "checkpoints" and best.exists()

    # The export gives the same logits as the best checkpoint, with the user's label names.
    exported = AutoModelForSequenceClassification.from_pretrained(out / "hf_model").eval()
    assert exported.config.id2label == {0: "bad", 1: "good"}
    tokenizer = AutoTokenizer.from_pretrained(out / "hf_model")
    batch = tokenizer(["the plot was never dull", "the cast was awful"], padding=True, return_tensors="pt")
    torch.testing.assert_close(exported(**batch).logits, load_module(best).model(**batch).logits)
    assert torch.load(best, weights_only=True)["hyper_parameters"]["pretrained_model_name_or_path"] == user_files["model"]

    # llm-eval on the best checkpoint reproduces the test metrics (data config read from the run).
    proc = run_cli("lightning_llm.evaluate", f"ckpt_path={best}", f"hydra.run.dir={tmp_path / 'eval'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluated = json.loads((tmp_path / "eval" / "eval_results.json").read_text())["test"]
    for key, value in results["test"].items():
        assert evaluated[key] == pytest.approx(value, rel=1e-5), key


@pytest.mark.parametrize(("budget", "validated_at"), [([], [4]), (["++trainer.limit_train_batches=3"], [3, 4])])
def test_max_steps_inside_an_epoch_ends_with_a_validation(compose_cfg, tmp_path: Path, budget: list[str],
                                                          validated_at: list[int]) -> None:
    """`trainer.max_steps=4` stopping training inside an epoch (the first: step 4 of 375; or the second, epochs of 3
    steps): the final weights are validated, so early stopping and the best checkpoint find their metric (inside
    the first epoch it crashed with "Early stopping conditioned on metric `val/acc` which is not available") and
    results.json has val and test metrics."""
    cfg = compose_cfg([*TINY_BERT, "trainer.max_steps=4", "data.batch_size=8", "++trainer.limit_val_batches=2",
                       "++trainer.limit_test_batches=1", "export=false", *budget])
    results = train(cfg)
    assert results["status"] == "completed"
    checkpoints = tmp_path / "run" / "checkpoints"
    saved = [torch.load(path, weights_only=True) for path in (checkpoints / "last.ckpt", results["best_checkpoint"])]
    assert saved[0]["global_step"] == 4 and saved[1]["global_step"] in validated_at
    rows = [r for r in csv.DictReader(open(tmp_path / "run" / "csv" / "metrics.csv")) if r.get("val/loss")]
    assert len(rows) == len(validated_at)
    assert results["val_last"]["val/loss"] == pytest.approx(float(rows[-1]["val/loss"]), rel=1e-6)
    assert {"test/acc", "test/loss"} <= set(results["test"])
