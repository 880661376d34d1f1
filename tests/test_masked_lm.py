"""Masked-LM pretraining end to end (tiny BERT), and the pretrain -> fine-tune chain through its `hf_model/`."""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from itertools import chain, islice
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification

from lightning_llm.config import CONFIG_DIR
from lightning_llm.runtime import builders
from lightning_llm.train import train
from tests.conftest import TINY_BERT, compose_run_config

LIMITS = ["callbacks.rich_progress_bar=null", "trainer.max_epochs=1", "data.batch_size=8",
          "++trainer.limit_train_batches=6", "++trainer.limit_val_batches=2", "++trainer.limit_test_batches=2"]


def _mlm_cfg(output_dir: str) -> DictConfig:
    """The tiny MLM run's config (composed as the `compose_cfg` fixture does), running in `output_dir`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=mlm_demo", *TINY_BERT, *LIMITS],
                      return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = output_dir
        del cfg["hydra"]
    GlobalHydra.instance().clear()
    return cfg


@pytest.fixture(scope="module")
def mlm_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One tiny MLM run shared by the tests below."""
    return train(_mlm_cfg(str(tmp_path_factory.mktemp("mlm_run"))))


def _encoder(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return getattr(model, model.base_model_prefix).state_dict()


def test_tiny_mlm_run_reports_masked_metrics_and_exports(mlm_run: dict) -> None:
    """val/mlm_acc, val/loss and the baseline val/mlm_majority_acc are those of the bare exported model on the same
    masked positions (validation masks are fixed per batch), the majority token is the most frequent non-special
    training token, counted here."""
    val, test = mlm_run["val"], mlm_run["test"]
    for stage, metrics in (("val", val), ("test", test)):
        assert metrics[f"{stage}/ppl"] == pytest.approx(math.exp(metrics[f"{stage}/loss"]), rel=1e-4)
    hf_model = Path(mlm_run["hf_model"])
    tokenizer = builders.load_tokenizer(str(hf_model), "x")
    datamodule = builders.build_datamodule(_mlm_cfg(mlm_run["run_dir"]), tokenizer)
    datamodule.setup("fit")
    counts = Counter(chain.from_iterable(datamodule.datasets["train"]["input_ids"]))
    for special in tokenizer.all_special_ids:
        counts.pop(special, None)
    assert counts[datamodule.majority_token_id] == max(counts.values())
    model = AutoModelForMaskedLM.from_pretrained(hf_model).eval()
    nll, correct, majority, masked = 0.0, 0, 0, 0
    with torch.no_grad():
        for batch in islice(datamodule.val_dataloader(), 2):  # ++trainer.limit_val_batches=2
            labels = batch.pop("labels")
            where = labels != -100
            logits = model(**batch).logits[where].double()
            targets = labels[where]
            nll += torch.nn.functional.cross_entropy(logits, targets, reduction="sum").item()
            correct += int((logits.argmax(-1) == targets).sum())
            majority += int((targets == datamodule.majority_token_id).sum())
            masked += int(where.sum())
    assert masked > 50
    assert val["val/mlm_acc"] == pytest.approx(correct / masked, abs=1e-6)
    assert val["val/mlm_majority_acc"] == pytest.approx(majority / masked, abs=1e-6)
    assert val["val/loss"] == pytest.approx(nll / masked, rel=1e-4)
    assert mlm_run["optimized_metric"] == {"name": "val/mlm_acc", "value": val["val/mlm_acc"]}
    assert json.loads((Path(mlm_run["run_dir"]) / "results.json").read_text())["val"] == val
    hf_model = Path(mlm_run["hf_model"])
    assert (hf_model / "tokenizer.json").is_file()
    assert AutoModelForMaskedLM.from_pretrained(hf_model).config.hidden_size == 32


def test_classifier_starts_from_the_mlm_export(mlm_run: dict, compose_cfg) -> None:
    hf_model = mlm_run["hf_model"]
    cfg = compose_cfg(["experiment=pretrain_then_finetune", f"model.pretrained_model_name_or_path={hf_model}",
                       *LIMITS])
    datamodule = builders.build_datamodule(cfg)
    tokenizer = builders.build_tokenizer(cfg, datamodule)
    datamodule.tokenizer = tokenizer
    datamodule.setup("fit")
    classifier = builders.build_model(cfg, tokenizer, datamodule).model

    assert tokenizer.get_vocab() == builders.load_tokenizer(hf_model, "x").get_vocab()  # the export's tokenizer
    encoder = _encoder(AutoModelForMaskedLM.from_pretrained(hf_model))
    loaded = _encoder(classifier)
    shared = [k for k in encoder if k in loaded]
    assert len(shared) >= 8 and any("layers.0." in k for k in shared)
    for key in shared:
        assert torch.equal(loaded[key], encoder[key]), key
    assert classifier.config.num_labels == 2

    scratch = builders.build_model(compose_cfg(["experiment=pretrain_then_finetune", *TINY_BERT, *LIMITS,
                                                "model.pretrained_model_name_or_path=null"]), tokenizer, datamodule)
    fresh = _encoder(scratch.model)
    key = next(k for k in shared if "layers.0." in k and k.endswith("weight") and loaded[k].ndim == 2)
    assert fresh[key].shape == loaded[key].shape
    assert not torch.equal(fresh[key], loaded[key])  # not what a fresh init gives


def test_finetune_half_trains_on_from_the_export(mlm_run: dict, compose_cfg) -> None:
    """`llm-train experiment=pretrain_then_finetune` started from the export: after its 6 steps (AdamW, lr 1e-3) the
    exported encoder is a short way from the MLM's (measured: 0.06 of the distance to a fresh init of the same
    architecture) and not equal to it (it trained); test/acc is the exported classifier's on the test batches."""
    results = train(compose_cfg(["experiment=pretrain_then_finetune", *LIMITS,
                                 f"model.pretrained_model_name_or_path={mlm_run['hf_model']}"]))
    assert results["status"] == "completed" and results["global_step"] == 6
    pretrained = _encoder(AutoModelForMaskedLM.from_pretrained(mlm_run["hf_model"]))
    tuned_model = AutoModelForSequenceClassification.from_pretrained(results["hf_model"]).eval()
    tuned = _encoder(tuned_model)
    torch.manual_seed(0)
    fresh = _encoder(AutoModelForSequenceClassification.from_config(tuned_model.config))
    keys = [k for k in pretrained if k in tuned and tuned[k].ndim == 2]
    assert len(keys) >= 4 and any("layers.0." in k for k in keys)

    def distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
        return float(torch.linalg.vector_norm(torch.cat([(a[k] - b[k]).flatten() for k in keys])))

    moved, to_fresh = distance(tuned, pretrained), distance(fresh, pretrained)
    assert 0 < moved < 0.25 * to_fresh, (moved, to_fresh)  # a fresh start would be ~1x away

    cfg = compose_cfg(["experiment=pretrain_then_finetune", *LIMITS,
                       f"model.pretrained_model_name_or_path={results['hf_model']}"])
    datamodule = builders.build_datamodule(cfg, builders.load_tokenizer(results["hf_model"], "x"))
    datamodule.setup("fit")
    correct = total = 0
    with torch.no_grad():
        for batch in islice(datamodule.test_dataloader(), 2):  # ++trainer.limit_test_batches=2
            labels = batch.pop("labels")
            correct += int((tuned_model(**batch).logits.argmax(-1) == labels).sum())
            total += len(labels)
    assert results["test"]["test/acc"] == pytest.approx(correct / total, abs=1e-6)


def test_finetune_half_without_the_export_path_is_one_line(compose_cfg, capsys) -> None:
    from lightning_llm.runtime.cli import run_or_exit

    with pytest.raises(SystemExit) as exit_info:
        run_or_exit(train, compose_cfg(["experiment=pretrain_then_finetune", *LIMITS]))
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert err[-1] == "error: model.pretrained_model_name_or_path: directory not found: ./<mlm run dir>/hf_model"


@pytest.mark.slow
def test_mlm_demo_beats_the_most_frequent_token_baseline_in_one_epoch(tmp_path: Path) -> None:
    """The demo learns: one epoch of mlm_demo (~20 s) measured val/mlm_acc 0.32 against 0.13 for always predicting
    the most frequent token."""
    results = train(compose_run_config(tmp_path / "run", ["experiment=mlm_demo", "trainer.max_epochs=1", "test=false",
                                                          "export=false", "callbacks.rich_progress_bar=null"]))
    GlobalHydra.instance().clear()
    val = results["val"]
    assert val["val/mlm_acc"] > val["val/mlm_majority_acc"] + 0.1


@pytest.mark.slow
def test_a_pretrained_start_beats_scratch_on_a_small_budget(tmp_path: Path) -> None:
    """The pretrain -> fine-tune claim, at the README's budget: an MLM on the review texts alone (20 epochs, no
    labels), then the same 2-epoch fine-tune (pretrain_then_finetune) from its export and from scratch (the same
    architecture); and LoRA's claim (docs/tasks/lora.md): `peft=lora` with its defaults from the same export comes
    within 0.02 of full fine-tuning. The 880 MLM steps dominate the time."""
    bundled = Path(__file__).resolve().parents[1] / "lightning_llm" / "data" / "bundled"
    texts = [f"data.{split}_file={bundled / f'reviews_{split}.csv'}" for split in ("train", "validation", "test")]
    quiet = ["callbacks.rich_progress_bar=null", "logger=none"]
    mlm = train(compose_run_config(tmp_path / "mlm", ["experiment=mlm_demo", *texts, "model.tokenizer_vocab_size=4000",
                                                      "trainer.max_epochs=20", "test=false", *quiet]))
    GlobalHydra.instance().clear()
    assert mlm["val"]["val/mlm_acc"] > mlm["val"]["val/mlm_majority_acc"] + 0.3
    # Two seeds per start, the run kept by its validation accuracy (as one would pick it): a 2-epoch fine-tune at
    # 1e-3 is chaotic, and on an AMD EPYC VM seed 1's pretrained run did not take off (test/acc 0.515) where seed 2
    # reached 0.995 and a plain PyTorch loop from the same export 1.0.
    accuracy = {}
    for start, path in (("pretrained", mlm["hf_model"]), ("scratch", "null")):
        runs = []
        for seed in (1, 2):
            runs.append(train(compose_run_config(tmp_path / f"{start}{seed}", [
                "experiment=pretrain_then_finetune", f"seed={seed}", f"model.pretrained_model_name_or_path={path}",
                "export=false", *quiet])))
            GlobalHydra.instance().clear()
        accuracy[start] = max(runs, key=lambda r: r["val"]["val/acc"])["test"]["test/acc"]
    # LoRA with its defaults (adapters on the attention projections and the token embeddings, its own rate) from
    # the same export: docs/tasks/lora.md says it matches full fine-tuning there.
    accuracy["lora"] = train(compose_run_config(tmp_path / "lora", [
        "experiment=pretrain_then_finetune", "seed=1", f"model.pretrained_model_name_or_path={mlm['hf_model']}",
        "peft=lora", "export=false", *quiet]))["test"]["test/acc"]
    GlobalHydra.instance().clear()
    with open(bundled / "reviews_test.csv", newline="") as f:
        labels = Counter(row["label"] for row in csv.DictReader(f))
    majority = max(labels.values()) / sum(labels.values())
    # Measured 2026-12-07 (Intel, seed 1): pretrained 0.9825, scratch 0.705, LoRA 1.0 (0.5775 with LoRA's token
    # embeddings left out, which this check then catches); AMD, seeds 1/2: pretrained 0.515/0.995, scratch
    # 0.705/0.795; most frequent test label 0.5175.
    assert accuracy["pretrained"] > accuracy["scratch"] + 0.08, accuracy
    assert accuracy["pretrained"] > majority + 0.3, (accuracy, majority)
    assert accuracy["lora"] >= accuracy["pretrained"] - 0.02, accuracy
