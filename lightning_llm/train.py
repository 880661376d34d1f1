"""`llm-train`: compose -> validate -> seed -> build -> fit -> test (best ckpt) -> export -> results.json
(-> push_to_hub)."""

from __future__ import annotations

from lightning_llm.runtime.console import early_stop_line, quiet_known_noise

quiet_known_noise()  # before the imports below bring in transformers (and torchao with it)

from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from lightning_llm.config import CONFIG_PATH
from lightning_llm.config.validation import resolve_ckpt_path, validate_train_config
from lightning_llm.runtime import allocator, builders
from lightning_llm.runtime.cli import launch, print_config, run_or_exit
from lightning_llm.runtime.hardware import share_run_dir
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
        results = _train(cfg)
    # After the outcome is recorded: a failed upload leaves the finished run (and its results.json) as it is.
    if cfg.get("push_to_hub") and results.get("hf_model") and rank_zero_only.rank == 0:
        from lightning_llm.runtime.hub import push

        print(push(results["run_dir"], cfg.push_to_hub, private=bool(cfg.hub.private), revision=cfg.hub.revision,
                   commit_message=cfg.hub.commit_message, key="push_to_hub"), flush=True)
    return results


def _train(cfg: DictConfig) -> dict[str, Any]:
    out = Path(cfg.paths.output_dir)
    print_config(cfg, save_to=out / "config_tree.log")
    pl.seed_everything(cfg.seed, workers=True)

    datamodule, tokenizer, model = builders.build_data_and_model(cfg)
    data = datamodule.data_fingerprints() if rank_zero_only.rank == 0 else None  # for results.json and a model card
    tokenizer.save_pretrained(str(builders.tokenizer_dir(out)))

    loggers, callbacks = builders.build_loggers(cfg), builders.build_callbacks(cfg)
    log_config(loggers, OmegaConf.to_container(cfg, resolve=True))
    trainer = builders.build_trainer(cfg, loggers, callbacks)

    if cfg.train:
        mark_running(cfg)
        trainer.fit(model, datamodule=datamodule, ckpt_path=resolve_ckpt_path(cfg), weights_only=True)
        stopped = early_stop_line(trainer)
        if stopped and trainer.is_global_zero:
            print(stopped, flush=True)
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
                            best_ckpt=best_ckpt, hf_dir=hf_dir, details=model.stage_details, data=data)
    if pruned_at is not None:
        results = mark_pruned(cfg, results, pruned_at)
    finish_loggers(loggers, OmegaConf.to_container(cfg, resolve=True), results)
    return results


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def _main(cfg: DictConfig) -> float | None:
    results = run_or_exit(train, cfg)
    return results["optimized_metric"]["value"] if results else None


def main() -> None:
    allocator.keep_freed_memory()  # docs/hardware.md: freed memory reused by the next step; MALLOC_* wins
    launch(_main, "train")



if __name__ == "__main__":
    main()
