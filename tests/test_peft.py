"""LoRA (`peft=lora`): what trains, the merged export, checkpoints, the config switch; end to end in the slow test."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

from lightning_llm.errors import UserError
from lightning_llm.modules import adapters
from lightning_llm.runtime.argv import route_group_shorthands
from lightning_llm.runtime.checkpoints import load_module
from lightning_llm.runtime.extras import install_hint
from lightning_llm.tasks.causal_lm import CausalLMModule
from lightning_llm.tasks.classification import SequenceClassificationModule
from tests.conftest import TINY_BERT

LORA = {"method": "lora", "r": 4, "alpha": 8.0, "dropout": 0.0}
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "max_position_embeddings": 64, "vocab_size": 120, "special_token_ids": {"pad_token_id": 0}}


def _perturbed(module: torch.nn.Module) -> torch.nn.Module:
    """LoRA starts as the identity (B = 0): give every trainable tensor random values so merging has work to do."""
    torch.manual_seed(0)
    with torch.no_grad():
        for param in module.parameters():
            if param.requires_grad:
                param.normal_(0, 0.2)
    return module.eval()


def test_only_adapters_and_head_train_a_small_share() -> None:
    module = SequenceClassificationModule(model_type="bert", hidden_size=256, num_hidden_layers=4,
                                          num_attention_heads=4, intermediate_size=1024, vocab_size=8000,
                                          special_token_ids={"pad_token_id": 0}, peft=LORA)
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or ".classifier.modules_to_save." in n for n in trainable), trainable
    assert any("query.lora_A" in n for n in trainable) and any("value.lora_B" in n for n in trainable)
    assert not any("key.lora" in n for n in trainable)  # BERT's default targets: query, value, word embeddings
    assert any("word_embeddings.lora_embedding_A" in n for n in trainable)
    share, total = adapters.trainable_share(module.model)
    assert share / total < 0.05
    assert f"({100 * share / total:.2f}%)" in adapters.describe(module.model)


@pytest.mark.parametrize("cls, model_type, auto", [(SequenceClassificationModule, "bert",
                                                    AutoModelForSequenceClassification),
                                                   (CausalLMModule, "gpt2", AutoModelForCausalLM)])
def test_merged_export_gives_the_adapter_models_logits(tmp_path: Path, cls, model_type: str, auto) -> None:
    module = _perturbed(cls(model_type=model_type, peft=LORA, **TINY))
    module.export(tmp_path / "hf_model", tokenizer=None)
    module.export_adapter(tmp_path / "hf_adapter")
    assert module.has_adapter  # the export merged a copy

    plain = auto.from_pretrained(tmp_path / "hf_model").eval()
    assert not any("lora" in name or "base_layer" in name for name, _ in plain.named_parameters())
    ids = torch.randint(1, TINY["vocab_size"], (3, 12))
    with torch.no_grad():
        expected, got = module(input_ids=ids).logits, plain(input_ids=ids).logits
        with module.model.disable_adapter():
            without_adapter = module(input_ids=ids).logits
    assert (expected - without_adapter).abs().max() > 1e-2  # the adapters matter, so merging them is tested
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)

    adapter_keys = set(load_file(tmp_path / "hf_adapter" / "adapter_model.safetensors"))
    assert adapter_keys and all("lora_" in k or "classifier" in k for k in adapter_keys)
    assert json.loads((tmp_path / "hf_adapter" / "adapter_config.json").read_text())["r"] == LORA["r"]


def test_checkpoint_restores_the_adapter_model(tmp_path: Path) -> None:
    """What llm-eval / llm-generate do with a LoRA checkpoint: rebuild from hyper-parameters, load the state."""
    module = _perturbed(SequenceClassificationModule(model_type="bert", peft=LORA, **TINY))
    path = tmp_path / "x.ckpt"
    torch.save({"lightning_llm_module": "lightning_llm.tasks.classification.SequenceClassificationModule",
                "hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, path)
    restored = load_module(path)
    assert restored.has_adapter
    ids = torch.randint(1, TINY["vocab_size"], (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(restored(input_ids=ids).logits, module(input_ids=ids).logits, atol=0, rtol=0)


def test_config_switch_and_bad_settings(compose_cfg) -> None:
    assert route_group_shorthands(["model.peft=lora", "model.peft.r=4", "x=1"]) == ["peft=lora", "model.peft.r=4",
                                                                                     "x=1"]
    cfg = compose_cfg(["peft=lora", "model.peft.r=4"])
    assert cfg.model.peft.r == 4 and cfg.model.peft.target_modules is None
    assert compose_cfg().model.peft == {}
    # LoRA's learning rate replaces the experiment's (a full fine-tuning one); the command line's wins over both
    assert compose_cfg(["experiment=classify_demo"]).model.learning_rate == 1e-3
    assert compose_cfg(["experiment=classify_demo", "peft=lora"]).model.learning_rate == 3e-3
    assert compose_cfg(["experiment=classify_demo", "peft=lora", "model.learning_rate=1e-4"]).model.learning_rate \
        == 1e-4
    with pytest.raises(UserError, match=r"model.peft.dropout=1.5: must be in \[0, 1\)"):
        adapters.settings_from({**LORA, "dropout": 1.5})
    with pytest.raises(UserError, match=r"model.peft.target_modules=\['nope'\]: No modules were targeted"):
        SequenceClassificationModule(model_type="bert", peft={**LORA, "target_modules": ["nope"]}, **TINY)


def test_settings_stay_as_given() -> None:
    """peft extends the modules_to_save list it gets with the task head: the run's hyper-parameters must not grow
    (they would, once more, on every checkpoint reload)."""
    peft = {**LORA, "modules_to_save": ["classifier"], "target_modules": ["query"]}
    module = SequenceClassificationModule(model_type="bert", peft=peft, **TINY)
    assert module.hparams.peft["modules_to_save"] == ["classifier"] and peft["modules_to_save"] == ["classifier"]
    assert module.hparams.peft["target_modules"] == ["query"]


def test_missing_peft_extra_is_one_line(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(UserError, match=r'model.peft needs the peft extra: ' + re.escape(install_hint("peft")) + r''):
        SequenceClassificationModule(model_type="bert", peft=LORA, **TINY)


@pytest.mark.slow
def test_lora_learns_from_a_pretrained_encoder_exports_and_evals(run_cli, tmp_path: Path) -> None:
    """Full fine-tuning gives an encoder; LoRA on it with a fresh head learns; hf_model reloads with the adapter
    model's logits; llm-eval on the LoRA checkpoint reproduces the run's test accuracy."""
    common = [*TINY_BERT, "trainer.max_epochs=2", "data.max_length=48", "callbacks.rich_progress_bar=null",
              "model.learning_rate=2e-3"]
    proc = run_cli("lightning_llm.train", *common, f"paths.output_dir={tmp_path / 'full'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    encoder = tmp_path / "encoder"  # the encoder alone: the LoRA classifier starts with a new head
    AutoModel.from_pretrained(tmp_path / "full" / "hf_model").save_pretrained(encoder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tmp_path / "full" / "hf_model" / name).exists():
            shutil.copy(tmp_path / "full" / "hf_model" / name, encoder / name)

    run = tmp_path / "lora"
    proc = run_cli("lightning_llm.train", *common, "model.peft=lora", f"model.pretrained_model_name_or_path={encoder}",
                   "model.learning_rate=5e-3", f"paths.output_dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "LoRA r=8 alpha=16 on query, value, word_embeddings + classifier in full:" in proc.stdout
    assert ", learning rate 0.005" in proc.stdout
    results = json.loads((run / "results.json").read_text())
    # balanced labels: chance and majority are 0.5 (400 test examples: 0.65 is ~6 standard errors above); measured
    # 0.70, and 0.715 with the embeddings adapted too
    assert results["test"]["test/acc"] > 0.65

    module = load_module(results["best_checkpoint"])
    plain = AutoModelForSequenceClassification.from_pretrained(run / "hf_model").eval()
    ids = torch.randint(5, 100, (4, 16))
    with torch.no_grad():
        torch.testing.assert_close(plain(input_ids=ids).logits, module(input_ids=ids).logits, atol=1e-5, rtol=0)
    assert (run / "hf_adapter" / "adapter_model.safetensors").exists()

    proc = run_cli("lightning_llm.evaluate", f"ckpt_path={results['best_checkpoint']}",
                   f"paths.output_dir={tmp_path / 'eval'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluated = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    assert evaluated["test"]["test/acc"] == pytest.approx(results["test"]["test/acc"])


@pytest.mark.parametrize(("rate", "warned"), [(5e-5, True), (2e-5, True), (1e-4, False), (3e-3, False)])
def test_full_fine_tuning_rate_under_lora_is_said_in_one_line(capsys, rate: float, warned: bool) -> None:
    """A LoRA run at a full fine-tuning rate (e.g. model.learning_rate=5e-5 on the command line, which wins over
    peft=lora's default) says so at the start in one stderr line; the rate given is still the one used."""
    module = SequenceClassificationModule(model_type="bert", peft=LORA, learning_rate=rate, **TINY)
    module._trainer = SimpleNamespace(is_global_zero=True)  # on_fit_start reads only this of the trainer
    module.on_fit_start()
    out, err = capsys.readouterr()
    assert f"learning rate {rate:g}" in out and module.hparams.learning_rate == rate
    lines = err.splitlines()
    if warned:
        assert lines == [f"warning: model.learning_rate={rate:g} with LoRA looks like a full fine-tuning rate: "
                         f"adapters start from zero and usually need 0.0001 or more (without model.learning_rate=, "
                         f"peft=lora uses its own default, conf/peft/learning_rate/lora.yaml)"]
    else:
        assert lines == []
    full = SequenceClassificationModule(model_type="bert", learning_rate=rate, **TINY)  # no LoRA: nothing said
    full._trainer = SimpleNamespace(is_global_zero=True)
    full.on_fit_start()
    assert capsys.readouterr() == ("", "")
