"""`llm-compress`: the int8 model runs, stays within a stated tolerance of fp32 on data where a quantization error
would show (a wrong scale fails the same check), reloads with the same outputs, and the report's figures are there
and sane (int8 smaller on disk)."""

from __future__ import annotations

import csv
import json
import random
import re
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig

from lightning_llm.compress import compress
from lightning_llm.data.tokenizers import train_tokenizer
from lightning_llm.errors import UserError
from lightning_llm.quantization import int8 as int8_module
from lightning_llm.quantization.int8 import load_quantized, quantize, resolve_backend, torch_ao_available
from lightning_llm.runtime.extras import install_hint

FILLERS = "the a film plot actor scene music was is very quite rather long short slow dark story ending".split()
TEST_ROWS = 256
# int8 "within tolerance of fp32" on the borderline test rows below; what a correct int8 model and broken ones measure
# there: docs/benchmarks.md, int8 quantization
MIN_AGREEMENT, MAX_ACC_DROP = 0.98, 0.02


def _counting_sentence(rng: random.Random, borderline: bool) -> tuple[str, str]:
    """Words `good` and `bad` among fillers; `positive` iff there are more `good`. Borderline rows differ by one
    word, so the model's margins there are small and a quantization error moves predictions."""
    if borderline:
        bad = rng.randint(1, 5)
        good = bad + rng.choice((-1, 1))
    else:
        good, bad = rng.sample(range(5), 2)
    words = ["good"] * good + ["bad"] * bad + [rng.choice(FILLERS) for _ in range(rng.randint(2, 6))]
    rng.shuffle(words)
    return " ".join(words), "positive" if good > bad else "negative"


def train_counting_classifier(tmp: Path, steps: int = 40) -> tuple[Path, list[tuple[str, str]]]:
    """A tiny BERT trained briefly to compare word counts: well above chance on borderline held-out rows but not
    saturated (its logits there are small); saved with its tokenizer. Returns the model dir and those rows."""
    rng = random.Random(0)
    train = [_counting_sentence(rng, borderline=False) for _ in range(512)]
    held_out = [_counting_sentence(rng, borderline=True) for _ in range(TEST_ROWS)]
    tokenizer = train_tokenizer([t for t, _ in train], "wordpiece", 100, tmp / "cache")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=40, num_labels=2,
                        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    model = AutoModelForSequenceClassification.from_config(config)
    batch = tokenizer([t for t, _ in train], padding=True, return_tensors="pt")
    labels = torch.tensor([config.label2id[label] for _, label in train])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(train), (32,))
        model(input_ids=batch["input_ids"][idx], attention_mask=batch["attention_mask"][idx],
              labels=labels[idx]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval().save_pretrained(tmp / "model")
    tokenizer.save_pretrained(tmp / "model")
    return tmp / "model", held_out


@pytest.fixture(scope="module")
def classifier_and_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The counting classifier and csv splits of its borderline held-out rows."""
    tmp = tmp_path_factory.mktemp("compress")
    model_dir, held_out = train_counting_classifier(tmp)
    for split in ("train", "validation", "test"):
        with open(tmp / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(held_out)
    return model_dir, tmp


def int8_close_to_fp32(test: dict[str, float]) -> bool:
    """The acceptance check on a report's `test` section: predictions agree and accuracy is kept."""
    return test["agreement"] >= MIN_AGREEMENT and abs(test["acc_drop"]) <= MAX_ACC_DROP


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
    assert test["examples"] == TEST_ROWS and 0.7 <= test["fp32_acc"] <= 0.95, test  # far from chance, not saturated
    assert int8_close_to_fp32(test), test
    assert report["latency_ms_per_batch"]["fp32"] > 0 and report["latency_ms_per_batch"]["int8"] > 0
    assert json.loads((tmp_path / "out" / "compress_report.json").read_text())["test"] == test

    reloaded = load_quantized(tmp_path / "out" / "int8_model")
    fp32 = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    in_memory = quantize(model_dir, fp32, "torch_ao")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out" / "int8_model")
    batch = tokenizer(["good film good bad", "bad story good bad bad"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        assert torch.equal(reloaded(**batch).logits, in_memory(**batch).logits)
        assert reloaded(**batch).logits.argmax(-1).tolist() == [1, 0]
    assert any(type(m).__name__ == "Linear" for m in fp32.modules())  # quantize left the fp32 model alone


@pytest.mark.skipif(not torch_ao_available(), reason="torch.ao.quantization removed from this torch")
def test_a_wrong_weight_scale_fails_the_int8_check(compose_cfg, classifier_and_data, tmp_path: Path,
                                                   monkeypatch) -> None:
    """The check above can fail: int8 weights whose scale is off by 2 (as if dequantized with half the scale)."""
    model_dir, data_dir = classifier_and_data
    quantize_right = int8_module._torch_ao_quantize

    def quantize_with_half_scale(model: torch.nn.Module) -> torch.nn.Module:
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.Linear):
                    module.weight.mul_(0.5)
        return quantize_right(model)

    monkeypatch.setattr(int8_module, "_torch_ao_quantize", quantize_with_half_scale)
    test = compress(_cfg(compose_cfg, model_dir, data_dir, tmp_path / "out", "backend=torch_ao"))["test"]
    assert not int8_close_to_fp32(test), test


def test_torchao_backend_reloads_with_plain_from_pretrained(compose_cfg, classifier_and_data, tmp_path: Path) -> None:
    import torchao  # noqa: F401  (the compress extra: installed with [dev]; missing, this test fails)

    model_dir, data_dir = classifier_and_data
    report = compress(_cfg(compose_cfg, model_dir, data_dir, tmp_path / "out", "backend=torchao"))
    assert report["size_bytes"]["ratio"] > 1.2 and int8_close_to_fp32(report["test"]), report["test"]
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out" / "int8_model").eval()
    assert type(model.bert.encoder.layer[0].attention.self.query.weight).__name__ == "Int8Tensor"
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out" / "int8_model")
    with torch.inference_mode():
        logits = model(**tokenizer(["good film good bad"], return_tensors="pt")).logits
    assert logits.argmax(-1).item() == 1


def test_bad_settings_are_one_line_errors(compose_cfg, classifier_and_data, tmp_path: Path, monkeypatch) -> None:
    model_dir, data_dir = classifier_and_data
    with pytest.raises(UserError, match="backend must be one of auto, torch_ao, torchao"):
        compress(_cfg(compose_cfg, model_dir, data_dir, tmp_path / "out", "backend=fp8"))
    with pytest.raises(UserError, match="data: not set and no saved run config"):
        compress(compose_cfg([f"model_path={model_dir}", f"output_dir={tmp_path / 'out'}"], config_name="compress"))
    assert not (tmp_path / "out").exists()  # nothing half-written
    monkeypatch.setitem(sys.modules, "torchao", None)  # as if the compress extra were not installed
    with pytest.raises(UserError, match=r'backend=torchao needs the compress extra: ' + re.escape(install_hint("compress")) + r''):
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
