"""`llm-compress`: the int8 model runs, agrees with fp32 on a tiny trained classifier, reloads with the same
outputs, and the report's figures are there and sane (int8 smaller on disk)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch
from test_explain import train_trigger_classifier
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from lightning_llm.compress import compress
from lightning_llm.errors import UserError
from lightning_llm.quantization.int8 import load_quantized, quantize, resolve_backend, torch_ao_available


@pytest.fixture(scope="module")
def classifier_and_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The trigger classifier of test_explain (embeddings, kept fp32, are ~half its weights) and csv splits of
    held-out texts labelled by the trigger."""
    tmp = tmp_path_factory.mktemp("compress")
    model_dir, held_out = train_trigger_classifier(tmp)
    for split in ("train", "validation", "test"):
        with open(tmp / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows((t, "positive" if i % 2 == 0 else "negative") for i, t in enumerate(held_out))
    return model_dir, tmp


def _cfg(compose_cfg, model_dir: Path, data_dir: Path, out: Path, *overrides: str):
    return compose_cfg([f"model_path={model_dir}", "data=text_classification",
                        *(f"data.{s}_file={data_dir / f'{s}.csv'}" for s in ("train", "validation", "test")),
                        "data.batch_size=16", "latency_batches=2", "latency_rounds=2", f"output_dir={out}",
                        *overrides], config_name="compress")


@pytest.mark.skipif(not torch_ao_available(), reason="torch.ao.quantization removed from this torch")
def test_int8_agrees_with_fp32_reloads_and_reports(compose_cfg, classifier_and_data, tmp_path: Path) -> None:
    model_dir, data_dir = classifier_and_data
    report = compress(_cfg(compose_cfg, model_dir, data_dir, tmp_path / "out", "backend=torch_ao"))
    assert report["backend"] == "torch_ao"
    assert report["size_bytes"]["int8"] < report["size_bytes"]["fp32"] and report["size_bytes"]["ratio"] > 1.2
    test = report["test"]
    assert test["examples"] == 64 and test["fp32_acc"] >= 0.95
    assert test["agreement"] >= 0.9 and abs(test["acc_drop"]) <= 0.1
    assert report["latency_ms_per_batch"]["fp32"] > 0 and report["latency_ms_per_batch"]["int8"] > 0
    assert json.loads((tmp_path / "out" / "compress_report.json").read_text())["test"] == test

    reloaded = load_quantized(tmp_path / "out" / "int8_model")
    fp32 = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    in_memory = quantize(model_dir, fp32, "torch_ao")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out" / "int8_model")
    batch = tokenizer(["the zebra film was slow", "a long dark story"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        assert torch.equal(reloaded(**batch).logits, in_memory(**batch).logits)
        assert reloaded(**batch).logits.argmax(-1).tolist() == [1, 0]
    assert any(type(m).__name__ == "Linear" for m in fp32.modules())  # quantize left the fp32 model alone


def test_torchao_backend_reloads_with_plain_from_pretrained(compose_cfg, classifier_and_data, tmp_path: Path) -> None:
    pytest.importorskip("torchao")
    model_dir, data_dir = classifier_and_data
    report = compress(_cfg(compose_cfg, model_dir, data_dir, tmp_path / "out", "backend=torchao"))
    assert report["size_bytes"]["ratio"] > 1.2 and report["test"]["agreement"] >= 0.9
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out" / "int8_model").eval()
    assert type(model.bert.encoder.layer[0].attention.self.query.weight).__name__ == "Int8Tensor"
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out" / "int8_model")
    with torch.inference_mode():
        logits = model(**tokenizer(["the zebra film was slow"], return_tensors="pt")).logits
    assert logits.argmax(-1).item() == 1


def test_bad_settings_are_one_line_errors(compose_cfg, classifier_and_data, tmp_path: Path, monkeypatch) -> None:
    model_dir, data_dir = classifier_and_data
    with pytest.raises(UserError, match="backend must be one of auto, torch_ao, torchao"):
        compress(_cfg(compose_cfg, model_dir, data_dir, tmp_path / "out", "backend=fp8"))
    with pytest.raises(UserError, match="data: not set and no saved run config"):
        compress(compose_cfg([f"model_path={model_dir}", f"output_dir={tmp_path / 'out'}"], config_name="compress"))
    assert not (tmp_path / "out").exists()  # nothing half-written
    monkeypatch.setitem(sys.modules, "torchao", None)  # as if the compress extra were not installed
    with pytest.raises(UserError, match=r'backend=torchao needs the compress extra: pip install "lightning-llm\[compress\]"'):
        resolve_backend("torchao")


@pytest.mark.slow
def test_cli_prints_the_ratios_and_fails_in_one_line(run_cli, classifier_and_data, tmp_path: Path) -> None:
    model_dir, data_dir = classifier_and_data
    data = [f"data.{s}_file={data_dir / f'{s}.csv'}" for s in ("train", "validation", "test")]
    proc = run_cli("lightning_llm.compress", f"model_path={model_dir}", "data=text_classification", *data,
                   "latency_batches=2", "latency_rounds=2", f"output_dir={tmp_path / 'out'}")
    assert proc.returncode == 0, proc.stderr
    assert "weights on disk (MB)" in proc.stdout and "predictions agree on" in proc.stdout
    assert "Failed to load" not in proc.stdout + proc.stderr  # torchao's import noise is filtered
    proc = run_cli("lightning_llm.compress", f"model_path={model_dir}", "method=int4")
    assert proc.returncode == 2 and proc.stderr.strip() == "error: method must be one of dynamic_int8, got 'int4'"
