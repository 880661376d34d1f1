"""Shared test fixtures and helpers (one place; import them as `from tests.conftest import ...`): offline environment,
Hydra compose with a temp run dir, CLI subprocess runner, JSONL files, bundled rows, a hand-written WordPiece
tokenizer, a prepared data module, a tiny GPT-2 model directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import lightning_llm.config.store  # noqa: F401  (the config schemas the YAML options extend)
from lightning_llm.config import CONFIG_DIR

REPO = Path(__file__).resolve().parents[1]
BUNDLED_DIR = REPO / "lightning_llm" / "data" / "bundled"  # (lightning_llm.data.sources imports datasets)
# A tiny from-scratch model: real code paths, seconds per run.
TINY_BERT = ["model.hidden_size=32", "model.num_hidden_layers=1", "model.num_attention_heads=2",
             "model.intermediate_size=64", "model.tokenizer_vocab_size=500"]
TINY_GPT = ["model.hidden_size=32", "model.num_hidden_layers=1", "model.num_attention_heads=2",
            "model.intermediate_size=64", "model.tokenizer_vocab_size=500"]


@pytest.fixture(scope="session", autouse=True)
def offline_env(tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test may reach the network; the tokenization cache is shared by the whole session."""
    os.environ.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                       "WANDB_SILENT": "true", "TOKENIZERS_PARALLELISM": "false",
                       "LIGHTNING_LLM_CACHE": str(tmp_path_factory.mktemp("cache"))})
    os.environ.pop("WANDB_API_KEY", None)


def _untracked_in_checkout() -> set[str]:
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO, capture_output=True,
                         text=True)
    return {line[3:] for line in out.stdout.splitlines() if line.startswith("??")} if out.returncode == 0 else set()


@pytest.fixture(scope="session", autouse=True)
def checkout_left_clean() -> Iterator[None]:
    """Tests write under their tmp paths only: a file a test leaves in the checkout (a run directory or a predictions
    file written to the current directory) fails the session."""
    before = _untracked_in_checkout()
    yield
    left = sorted(_untracked_in_checkout() - before)
    assert not left, f"tests left files in the checkout: {left[:10]}"


def compose_run_config(run_dir: Path, overrides: list[str] | None = None, config_name: str = "train") -> DictConfig:
    """Compose a config like the CLI does, running in `run_dir` (logs beside it), with ${hydra:...} resolvable."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides or [], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
        cfg.paths.log_dir = str(Path(run_dir).parent / "logs")
        del cfg["hydra"]
    return cfg


@pytest.fixture
def compose_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """`compose_run_config` with the run directory tmp_path/run."""
    yield lambda overrides=None, config_name="train": compose_run_config(tmp_path / "run", overrides, config_name)
    GlobalHydra.instance().clear()


@pytest.fixture
def run_cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Run an entry point (`lightning_llm.train`, ...) in a subprocess from tmp_path, as a user would."""

    def _run(module: str, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
             timeout: int = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd or tmp_path, capture_output=True,
                              text=True, timeout=timeout, env={**os.environ, **(env or {})})

    return _run


def write_jsonl(path: Path, rows: list[dict]) -> str:
    """`rows` as JSON lines at `path` (parents made); the path as a string, what a `data.*_file` key takes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def bundled_rows(name: str, n: int, start: int = 0) -> list[dict]:
    """Rows `start` to `start + n` of the bundled `<name>_train.jsonl` (ner, qa, translation, ...)."""
    lines = (BUNDLED_DIR / f"{name}_train.jsonl").read_text().splitlines()[start:start + n]
    return [json.loads(line) for line in lines]


def wordpiece_tokenizer(vocab: list[str]) -> Any:
    """A BERT-style fast tokenizer (lower-casing, [CLS] A [SEP] B [SEP]) with a hand-written vocabulary after the 5
    special tokens, so the sub-word split of a test sentence is known."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(specials + vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]",
                                   model_input_names=["input_ids", "token_type_ids", "attention_mask"])


def prepared_datamodule(datamodule_class: type, tmp_path: Path, files: dict[str, str | None], **kwargs: Any) -> Any:
    """A data module of `datamodule_class` over `files` ({split: path}), cached under tmp_path, prepared and set up
    for fit (kwargs: the tokenizer and the task's own settings)."""
    dm = datamodule_class(cache_dir=str(tmp_path / "cache"), **{f"{split}_file": path for split, path in files.items()},
                          **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def tiny_gpt_dir(tmp: Path, corpus_lines: int) -> Path:
    """A tiny random GPT-2 (1 layer, 32 wide) with a BPE tokenizer trained on the first `corpus_lines` lines of the
    bundled corpus, saved as an HF model dir under tmp/model."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config

    from lightning_llm.data.tokenizers import train_tokenizer

    lines = (BUNDLED_DIR / "corpus_train.txt").read_text().splitlines()[:corpus_lines]
    tokenizer = train_tokenizer(lines, "bpe", 300, tmp / "cache")
    torch.manual_seed(0)
    config = GPT2Config(n_layer=1, n_embd=32, n_head=2, n_inner=64, n_positions=64, vocab_size=len(tokenizer),
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp / "model")
    tokenizer.save_pretrained(tmp / "model")
    return tmp / "model"
