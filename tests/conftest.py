"""Shared test fixtures: offline environment, Hydra compose with a temp run dir, CLI subprocess runner."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import lightning_llm.config.store  # noqa: F401  (the config schemas the YAML options extend)
from lightning_llm.config import CONFIG_DIR

REPO = Path(__file__).resolve().parents[1]
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
