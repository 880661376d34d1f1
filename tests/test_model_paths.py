"""The one `model_path=` loader of llm-generate, llm-predict, llm-explain and llm-compress: every form resolves to
what it holds, with the run it came from; a model of a task a command does not take is refused in one line naming the
file and the command (for an HF model from its config, before the weights load)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models
from transformers import BertConfig, BertForTokenClassification, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from lightning_llm import compress, generate, predict
from lightning_llm.errors import UserError
from lightning_llm.runtime.model_paths import load_model_path
from lightning_llm.tasks.classification import SequenceClassificationModule

TINY = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32,
        "max_position_embeddings": 32}
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<eos>", "a", "b"]


def _tokenizer(**specials: str) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)},
                                                                               unk_token="[UNK]")), **specials)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A run dir with an hf_model/ export (token classifier), one with only a checkpoint (sequence classifier) and
    its tokenizer/, and an HF dir of a GPT-2 whose tokenizer has no pad token."""
    root = tmp_path_factory.mktemp("model_paths")
    torch.manual_seed(0)
    BertForTokenClassification(BertConfig(vocab_size=len(VOCAB), num_labels=3, **TINY)).save_pretrained(
        root / "hf_run" / "hf_model")
    _tokenizer(pad_token="[PAD]", unk_token="[UNK]").save_pretrained(root / "hf_run" / "hf_model")
    module = SequenceClassificationModule(model_type="bert", vocab_size=len(VOCAB), num_labels=2, **TINY)
    (root / "ckpt_run" / "checkpoints").mkdir(parents=True)
    torch.save({"lightning_llm_module": "lightning_llm.tasks.classification.SequenceClassificationModule",
                "hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()},
               root / "ckpt_run" / "checkpoints" / "best.ckpt")
    _tokenizer(pad_token="[PAD]", unk_token="[UNK]").save_pretrained(root / "ckpt_run" / "tokenizer")
    GPT2LMHeadModel(GPT2Config(vocab_size=len(VOCAB), n_layer=1, n_embd=16, n_head=2, n_positions=32)).save_pretrained(
        root / "gpt")
    _tokenizer(eos_token="<eos>").save_pretrained(root / "gpt")
    return {"hf_run": root / "hf_run", "ckpt_run": root / "ckpt_run", "gpt": root / "gpt"}


def test_every_form_loads_what_it_holds_with_its_run(runs: dict[str, Path]) -> None:
    ckpt = runs["ckpt_run"] / "checkpoints" / "best.ckpt"
    for given in (runs["ckpt_run"], ckpt):
        loaded = load_model_path(str(given), compress.accepts())
        assert (loaded.source, loaded.run_dir, loaded.task) == (str(ckpt), runs["ckpt_run"].resolve(), "classification")
        assert loaded.hparams["num_labels"] == 2 and not loaded.model.training
    for given in (runs["hf_run"], runs["hf_run"] / "hf_model"):
        loaded = load_model_path(str(given), predict.accepts())
        assert (loaded.source, loaded.run_dir, loaded.task) == (str(runs["hf_run"] / "hf_model"), runs["hf_run"],
                                                                "token_classification")
        assert loaded.hparams == {} and not loaded.model.training
    loaded = load_model_path(str(runs["gpt"]), generate.accepts())
    assert (loaded.task, loaded.run_dir) == ("causal_lm", None)
    assert loaded.tokenizer.pad_token == "<eos>"  # GPT-style tokenizer: pads with EOS


def test_other_tasks_are_refused_in_one_line(runs: dict[str, Path], tmp_path: Path) -> None:
    ckpt = runs["ckpt_run"] / "checkpoints" / "best.ckpt"
    with pytest.raises(UserError, match=rf"^model_path: {ckpt} is a classification checkpoint; llm-generate "
                                        r"generates with models of the tasks: (\w+, )*causal_lm(, \w+)*$"):
        load_model_path(str(runs["ckpt_run"]), generate.accepts())
    no_weights = tmp_path / "hf_model"
    shutil.copytree(runs["hf_run"] / "hf_model", no_weights, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(UserError, match=rf"^model_path: {no_weights} holds a BertForTokenClassification; "
                                        r"llm-compress quantizes models of the tasks: classification$"):
        load_model_path(str(no_weights), compress.accepts())  # refused from config.json: the weights are not read
    with pytest.raises(UserError, match=rf"^model_path: cannot load a model from '{no_weights}': "):
        load_model_path(str(no_weights), predict.accepts())


def test_a_config_without_architectures_is_a_causal_lm_for_llm_generate_only(runs: dict[str, Path],
                                                                             tmp_path: Path) -> None:
    untagged = shutil.copytree(runs["gpt"], tmp_path / "gpt")
    config = json.loads((untagged / "config.json").read_text())
    (untagged / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "architectures"}))
    assert load_model_path(str(untagged), generate.accepts()).task == "causal_lm"
    with pytest.raises(UserError, match=rf"^model_path: {untagged} holds a model of unknown architecture; llm-predict"):
        load_model_path(str(untagged), predict.accepts())
