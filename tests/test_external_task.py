"""Adding a task from outside the package: one file of its own (data module, LightningModule, its `predict`,
registered with `lightning_llm.registry`) plus configs, allowed with `allow_targets`, trains, evaluates and
predicts through the unchanged commands. This is docs/adding-a-task.md's worked example, small."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from tests.conftest import REPO

TASK = '''
"""Text regression: one number per text (a task of our own)."""
import json
from pathlib import Path
from typing import Any

import torch
from datasets import DatasetDict
from torchmetrics import MeanMetric, MeanSquaredError, MetricCollection
from transformers import AutoModelForSequenceClassification

from lightning_llm import registry
from lightning_llm.data.base import CachedTextDataModule
from lightning_llm.data.padding import PaddingCollator
from lightning_llm.modules.base import HFTaskModule
from lightning_llm.runtime.inputs import text_lines


class RegressionDataModule(CachedTextDataModule):
    objectives = frozenset({"regression"})

    def __init__(self, *, text_column: str = "text", score_column: str = "score", max_length: int = 32,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.text_column, self.score_column, self.max_length = text_column, score_column, max_length

    def training_texts(self):
        yield from self.load_raw()["train"][self.text_column]

    def _processing_params(self) -> dict[str, Any]:
        return {"text": self.text_column, "score": self.score_column, "max_length": self.max_length}

    def _process(self, raw: DatasetDict) -> tuple[DatasetDict, dict[str, Any]]:
        def encode(batch):
            out = self.tokenizer(batch[self.text_column], truncation=True, max_length=self.max_length)
            out["labels"] = [float(v) for v in batch[self.score_column]]
            return out
        return DatasetDict({s: ds.map(encode, batched=True, remove_columns=ds.column_names)
                            for s, ds in raw.items()}), {}

    def _after_load(self, datasets: DatasetDict, meta: dict[str, Any]) -> None:
        self.collate_fn = PaddingCollator(self.tokenizer, pad_to_multiple_of=self.pad_to_multiple_of)


class RegressionModule(HFTaskModule):
    auto_class = AutoModelForSequenceClassification
    task = "regression"
    tokenizer_kind = "wordpiece"
    monitor = optimized_metric = ("val/mse", "min")

    def task_config(self) -> dict[str, Any]:
        return {"num_labels": 1, "problem_type": "regression"}

    def make_metrics(self) -> MetricCollection:
        return MetricCollection({"loss": MeanMetric(), "mse": MeanSquaredError()}, compute_groups=False)

    def update_metrics(self, metrics, batch) -> None:
        out = self.model(**batch)
        metrics["loss"].update(out.loss.detach(), weight=batch["labels"].shape[0])
        metrics["mse"].update(out.logits.squeeze(-1).float(), batch["labels"].float())

    @staticmethod
    def predict(model, tokenizer, cfg, settings, device):
        texts = text_lines(Path(cfg.input_file))
        enc = tokenizer(texts, truncation=True, max_length=settings.get("max_length") or 32, padding=True,
                        return_tensors="pt").to(device)
        with torch.inference_mode():
            scores = model(**enc).logits.squeeze(-1).tolist()
        return [{"text": t, "score": s} for t, s in zip(texts, scores)]


registry.register(RegressionModule)
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's project: the task package, its configs and a data set whose score is learnable (word count)."""
    (tmp_path / "rating").mkdir()
    (tmp_path / "rating" / "__init__.py").write_text(TASK)
    with open(REPO / "lightning_llm" / "data" / "bundled" / "reviews_train.csv", newline="") as f:
        texts = [row["text"] for row in csv.DictReader(f)][:160]
    for name, part in (("train", texts[:120]), ("dev", texts[120:140]), ("test", texts[140:])):
        with open(tmp_path / f"ratings_{name}.csv", "w", newline="") as f:
            csv.writer(f).writerows([("text", "score"), *((t, len(t.split()) / 10) for t in part)])
    for sub, name, body in [
        ("model", "regressor", "_target_: rating.RegressionModule\ntokenizer_vocab_size: 300\nhidden_size: 32\n"
                               "num_hidden_layers: 1\nnum_attention_heads: 2\nintermediate_size: 64\n"
                               "max_position_embeddings: 64\nlearning_rate: 1.0e-3\n"),
        ("data", "ratings", "_target_: rating.RegressionDataModule\ntrain_file: ratings_train.csv\n"
                            "validation_file: ratings_dev.csv\ntest_file: ratings_test.csv\nbatch_size: 16\n"
                            "cache_dir: ${paths.cache_dir}\nseed: ${seed}\n")]:
        (tmp_path / "my_conf" / sub).mkdir(parents=True)
        (tmp_path / "my_conf" / sub / f"{name}.yaml").write_text(body)
    return tmp_path


@pytest.mark.slow  # three CLI runs; the refusal below stays in the fast suite
def test_a_task_of_our_own_trains_evaluates_and_predicts(run_cli, project: Path) -> None:
    env = {"PYTHONPATH": os.pathsep.join([str(project), os.environ.get("PYTHONPATH", "")])}
    train = run_cli("lightning_llm.train", "--config-dir", str(project / "my_conf"), "model=regressor",
                    "data=ratings", "allow_targets=[rating]", "trainer.max_epochs=2", "logger=none",
                    "callbacks.early_stopping=null", f"hydra.run.dir={project / 'run'}", env=env)
    assert train.returncode == 0, train.stderr[-3000:]
    results = json.loads((project / "run" / "results.json").read_text())
    assert results["optimized_metric"]["name"] == "val/mse" and results["test"]["test/mse"] > 0

    ckpt = results["best_checkpoint"]
    evaluated = run_cli("lightning_llm.evaluate", f"ckpt_path={ckpt}", "allow_targets=[rating]",
                        f"hydra.run.dir={project / 'eval'}", env=env)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    scored = json.loads((project / "eval" / "eval_results.json").read_text())["test"]
    assert scored["test/mse"] == pytest.approx(results["test"]["test/mse"], rel=1e-5)

    (project / "texts.txt").write_text("short one\na much longer review text that goes on and on and on\n")
    for model_path in (project / "run", ckpt):
        predicted = run_cli("lightning_llm.predict", f"model_path={model_path}", "allow_targets=[rating]",
                            f"input_file={project / 'texts.txt'}", f"output_file={project / 'scores.jsonl'}",
                            env=env)
        assert predicted.returncode == 0, predicted.stderr[-3000:]
        rows = [json.loads(line) for line in (project / "scores.jsonl").read_text().splitlines()]
        assert [r["text"] for r in rows] == ["short one", "a much longer review text that goes on and on and on"]
        assert all(isinstance(r["score"], float) for r in rows)


def test_without_allow_targets_the_task_is_refused_in_one_line(run_cli, project: Path) -> None:
    env = {"PYTHONPATH": str(project)}
    proc = run_cli("lightning_llm.train", "--config-dir", str(project / "my_conf"), "model=regressor",
                   "data=ratings", f"hydra.run.dir={project / 'run'}", env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: model._target_='rating.RegressionModule' is not "
                                                          "allowed")
