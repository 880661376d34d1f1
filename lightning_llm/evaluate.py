"""`llm-eval ckpt_path=...`: test metrics of a checkpoint, printed and written to <eval run>/eval_results.json.

The data config is the one the run that wrote the checkpoint saved (columns, max_length, label names), with this
command line's `data.*` settings on top: `llm-eval ckpt_path=X data.test_file=Y` scores Y as that run would have.
`data=<option>` starts from that option instead. Only the test split is loaded, and labels are encoded with the
checkpoint's own names (`eval_data_settings` of the module), never re-derived from the new data."""

from __future__ import annotations

from lightning_llm.runtime.console import quiet_known_noise

quiet_known_noise()  # before the imports below bring in transformers (and torchao with it)

import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from lightning_llm.config import CONFIG_PATH
from lightning_llm.config.schema import settings_of
from lightning_llm.config.targets import allowed_targets
from lightning_llm.config.validation import check_settings
from lightning_llm.errors import UserError, require
from lightning_llm.runtime import allocator, builders
from lightning_llm.runtime.argv import data_keys_onto_saved_config
from lightning_llm.runtime.checkpoints import (
    load_module,
    run_dir_of,
    run_tokenizer,
    saved_run_config,
)
from lightning_llm.runtime.cli import launch, run_or_exit
from lightning_llm.runtime.results import collect_metrics
from lightning_llm.utils.io import write_json_atomic


def _data_config(cfg: DictConfig) -> dict[str, Any]:
    """`data=<option>` (with its `data.*` overrides) when given, else the saved run's data config with this
    command line's `data.*` keys on top; resolved against this run's `paths`."""
    given = cfg.get("data")
    if isinstance(given, DictConfig) and "_target_" in given:
        return OmegaConf.to_container(given, resolve=True)
    saved = saved_run_config(cfg.ckpt_path)
    if saved is None or not saved.get("data"):
        raise UserError(f"data: no saved run config at {run_dir_of(cfg.ckpt_path) / '.hydra' / 'config.yaml'}; "
                        f"pass data=<option>")
    with open_dict(saved):
        saved.paths = cfg.paths  # the saved paths point at the old run's Hydra runtime
    data = OmegaConf.to_container(saved.data, resolve=True)
    return {**data, **(OmegaConf.to_container(given, resolve=True) if given else {})}


def _with_checkpoint_settings(data: dict[str, Any], model: Any, data_cls: type) -> dict[str, Any]:
    """The data settings the checkpoint fixes (label names in the model's id order) set from its
    hyper-parameters; a different value given on the command line is refused."""
    data = dict(data)
    accepted = settings_of(data_cls)
    for key in sorted(type(model).eval_data_settings):
        value = model.hparams.get(key)
        if value is None or key not in accepted:
            continue
        value = list(value) if isinstance(value, (list, tuple)) else value
        if data.get(key) is not None and data[key] != value:
            raise UserError(f"data.{key}={data[key]} differs from the checkpoint's {value} (the model's id order): "
                            f"drop data.{key}")
        data[key] = value
    return data


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    require(not OmegaConf.is_missing(cfg, "ckpt_path") and bool(cfg.ckpt_path),
            "ckpt_path: required (a .ckpt file written by llm-train)")
    model = load_module(cfg.ckpt_path, allowed=allowed_targets(cfg))
    tokenizer = run_tokenizer(cfg.ckpt_path, "ckpt_path")
    allowed = list(allowed_targets(cfg))  # from this command line only, never from the saved run config
    data = OmegaConf.create({"data": _data_config(cfg), "allow_targets": allowed})
    check_settings(data)  # a typo in a data.* key is one line naming it
    data_cls = builders.target_class(data.data, "data", allowed_targets(data))
    run_cfg = OmegaConf.create({"data": _with_checkpoint_settings(OmegaConf.to_container(data.data), model, data_cls),
                                "allow_targets": allowed})
    datamodule = builders.build_datamodule(run_cfg, tokenizer, objective=model.task, splits=("test",))
    datamodule.prepare_data()
    datamodule.setup("test")
    datamodule.require_splits("test")
    type(model).reconcile(dict(model.hparams), datamodule.model_kwargs())  # the data fits the trained model
    builders.hand_over(model, tokenizer, datamodule)
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
    allocator.keep_freed_memory()  # docs/hardware.md: freed memory reused by the next step; MALLOC_* wins
    sys.argv[1:] = data_keys_onto_saved_config(sys.argv[1:])
    launch(_main, "eval")



if __name__ == "__main__":
    main()
