"""`llm-eval ckpt_path=...`: test metrics of a checkpoint, printed and written to <eval run>/eval_results.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from lightning_llm.config import CONFIG_PATH
from lightning_llm.config.targets import allowed_targets
from lightning_llm.errors import UserError
from lightning_llm.runtime import builders
from lightning_llm.runtime.checkpoints import (
    load_module,
    load_run_tokenizer,
    saved_run_config,
)
from lightning_llm.runtime.cli import launch, run_or_exit
from lightning_llm.runtime.results import collect_metrics
from lightning_llm.utils.io import write_json_atomic


def _data_config(cfg: DictConfig) -> DictConfig:
    """`data=` given on the command line, else the data config of the run that wrote the checkpoint."""
    if cfg.get("data"):
        return cfg.data
    saved = saved_run_config(cfg.ckpt_path)
    if saved is None or "data" not in saved:
        raise UserError("data: not set and no saved run config next to the checkpoint; pass data=<option>")
    with open_dict(saved):
        saved.paths = cfg.paths  # the saved paths point at the old run's Hydra runtime
    return OmegaConf.create(OmegaConf.to_container(saved, resolve=True)["data"])


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    model = load_module(cfg.ckpt_path)
    tokenizer = load_run_tokenizer(cfg.ckpt_path)
    # Allowed packages come from this command line only, never from the saved run config.
    run_cfg = OmegaConf.create({"data": _data_config(cfg), "allow_targets": list(allowed_targets(cfg))})
    datamodule = builders.build_datamodule(run_cfg, tokenizer, objective=model.task)
    datamodule.prepare_data()
    datamodule.setup("test")
    datamodule.require_splits("test")
    type(model).reconcile(dict(model.hparams), datamodule.model_kwargs())  # the data fits the trained model
    trainer = builders.build_trainer(cfg, loggers=[], callbacks=[])
    trainer.test(model, datamodule=datamodule)
    results = {"status": "completed", "ckpt_path": str(Path(cfg.ckpt_path).resolve()),
               "test": collect_metrics(trainer, "test/"), "run_dir": str(cfg.paths.output_dir)}
    if model.stage_details:
        results["details"] = model.stage_details
    write_json_atomic(Path(cfg.paths.output_dir) / "eval_results.json", results)
    print(f"test metrics of {cfg.ckpt_path}: {results['test']}")
    return results


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="eval")
def _main(cfg: DictConfig) -> None:
    run_or_exit(evaluate, cfg)


def main() -> None:
    launch(_main, "eval")


if __name__ == "__main__":
    main()
