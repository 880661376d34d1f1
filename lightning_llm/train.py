"""`llm-train`: compose -> validate -> seed -> build -> fit -> test (best ckpt) -> export -> results.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from lightning_llm.config import CONFIG_PATH
from lightning_llm.config.validation import resolve_ckpt_path, validate_train_config
from lightning_llm.runtime import builders
from lightning_llm.runtime.cli import launch, print_config, run_or_exit
from lightning_llm.runtime.hardware import share_run_dir
from lightning_llm.runtime.process_exit import as_process
from lightning_llm.runtime.results import (
    checkpoint_val_metrics,
    collect_metrics,
    export_model,
    mark_running,
    outcome_recorded,
    write_results,
)
from lightning_llm.tracking.loggers import finish_loggers, log_config
from lightning_llm.tracking.trials import mark_pruned, pruned_at_step


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one training job and return what results.json holds (including `optimized_metric`)."""
    share_run_dir()  # torchrun: the other ranks wait for rank 0's run directory
    validate_train_config(cfg)
    with outcome_recorded(cfg):
        return _train(cfg)


def _train(cfg: DictConfig) -> dict[str, Any]:
    out = Path(cfg.paths.output_dir)
    print_config(cfg, save_to=out / "config_tree.log")
    pl.seed_everything(cfg.seed, workers=True)

    datamodule, tokenizer, model = builders.build_data_and_model(cfg)
    tokenizer.save_pretrained(str(builders.tokenizer_dir(out)))

    loggers, callbacks = builders.build_loggers(cfg), builders.build_callbacks(cfg)
    log_config(loggers, OmegaConf.to_container(cfg, resolve=True))
    trainer = builders.build_trainer(cfg, loggers, callbacks)

    if cfg.train:
        mark_running(cfg)
        trainer.fit(model, datamodule=datamodule, ckpt_path=resolve_ckpt_path(cfg), weights_only=True)
    val_last = collect_metrics(trainer, "val/")
    best_ckpt = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    val_metrics = checkpoint_val_metrics(best_ckpt) or val_last  # the best checkpoint's, beside its test metrics
    test_metrics = {}
    pruned_at = pruned_at_step(cfg)  # an Optuna trial its pruner stopped: not tested, not exported
    if cfg.test and pruned_at is None:
        # ckpt_path="best" also loads the best weights into `model`, so the export below is the best model.
        trainer.test(model, datamodule=datamodule, ckpt_path=best_ckpt or None, weights_only=True)
        test_metrics = collect_metrics(trainer, "test/")
    hf_dir = export_model(trainer, model, tokenizer, out) if cfg.export and pruned_at is None else None
    results = write_results(cfg, trainer, val_metrics=val_metrics, val_last=val_last, test_metrics=test_metrics,
                            best_ckpt=best_ckpt, hf_dir=hf_dir, details=model.stage_details)
    if pruned_at is not None:
        results = mark_pruned(cfg, results, pruned_at)
    finish_loggers(loggers, OmegaConf.to_container(cfg, resolve=True), results)
    return results


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def _main(cfg: DictConfig) -> float | None:
    results = run_or_exit(train, cfg)
    return results["optimized_metric"]["value"] if results else None


def main() -> None:
    launch(_main, "train")


run = as_process(main)  # the console script

if __name__ == "__main__":
    run()
