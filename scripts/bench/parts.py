"""Our side of the benchmarks, built exactly as `llm-train` builds it: Hydra-composed config -> builders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from lightning_llm.config import CONFIG_DIR, store  # noqa: F401  (store: registers the config schemas)
from lightning_llm.runtime import builders


def compose_config(overrides: list[str], run_dir: Path, cache_dir: Path) -> DictConfig:
    """The config `llm-train <overrides>` would run with, its run and cache directories under the benchmark's."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
        cfg.paths.log_dir = str(run_dir.parent)
        cfg.paths.cache_dir = str(cache_dir)
        del cfg["hydra"]
    GlobalHydra.instance().clear()
    return cfg


@dataclass
class OurRun:
    cfg: DictConfig
    datamodule: Any
    tokenizer: Any
    model: pl.LightningModule

    def trainer(self, extra_callbacks: list[pl.Callback], drop: tuple[type, ...] = (),
                logger: bool = True) -> pl.Trainer:
        """The Trainer with the config's callbacks and loggers (minus instances of `drop`), plus `extra_callbacks`."""
        callbacks = [c for c in builders.build_callbacks(self.cfg) if not isinstance(c, drop)]
        loggers = builders.build_loggers(self.cfg) if logger else []
        return builders.build_trainer(self.cfg, loggers, callbacks + extra_callbacks)


def build_our_run(overrides: list[str], run_dir: Path, cache_dir: Path) -> OurRun:
    """Data module, tokenizer and model in the order `lightning_llm.train` creates them (same seed first)."""
    cfg = compose_config(overrides, run_dir, cache_dir)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, tokenizer, model = builders.build_data_and_model(cfg)
    return OurRun(cfg, datamodule, tokenizer, model)
