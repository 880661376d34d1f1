"""Turn a composed config into parts: tokenizer, data module, model, trainer. Hydra stops here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf, open_dict

from lightning_llm import compat
from lightning_llm.callbacks.optuna_pruning import OptunaPruning
from lightning_llm.config.targets import (
    allowed_targets,
    check_targets,
    instantiate_collection,
    safe_instantiate,
    upgrade_targets,
)
from lightning_llm.data.tokenizers import load_tokenizer, train_tokenizer
from lightning_llm.errors import UserError
from lightning_llm.runtime.checkpoint_io import write_checkpoints_directly
from lightning_llm.runtime.hardware import check_hardware, enable_gpu_fast_paths
from lightning_llm.runtime.hardware import trainer_kwargs as trainer_hardware_kwargs
from lightning_llm.runtime.job_resources import apply_thread_budget, oversubscription_hint
from lightning_llm.tracking.trials import TrialLink

# Keys of `model` consumed here (tokenizer resolution) or filled in from the data, not passed through as-is.
_DERIVED_MODEL_KEYS = ("vocab_size", "special_token_ids", "num_labels", "label_names")


def target_class(node: DictConfig, where: str, allowed: tuple[str, ...] = ()) -> type:
    upgrade_targets(node)
    check_targets(node, where, allowed)
    if "_target_" not in node:
        raise UserError(f"{where}._target_ is missing: pick a config with {where}=<option>")
    try:
        return get_class(node._target_)
    except Exception as err:
        raise UserError(f"{where}._target_={node._target_!r} cannot be imported") from err


def check_task_pair(cfg: DictConfig) -> None:
    """A model and a data module of different tasks (e.g. gpt + text_classification) fail before any work."""
    model_cls, data_cls = (target_class(cfg.model, "model", allowed_targets(cfg)),
                           target_class(cfg.data, "data", allowed_targets(cfg)))
    objectives = getattr(data_cls, "objectives", frozenset())
    if getattr(model_cls, "task", None) not in objectives:
        raise UserError(f"model {model_cls.__name__} ({getattr(model_cls, 'task', '?')}) cannot train on data "
                        f"{data_cls.__name__} ({'/'.join(sorted(objectives))}): pick matching model= and data= options")


def build_tokenizer(cfg: DictConfig, datamodule_for_texts: Any) -> Any:
    """The model's own tokenizer, an explicit one, or one trained on the training text (from scratch)."""
    model_cfg, model_cls = cfg.model, target_class(cfg.model, "model", allowed_targets(cfg))
    trust = bool(model_cfg.get("trust_remote_code", False))
    if model_cfg.get("tokenizer_name_or_path"):
        tokenizer = load_tokenizer(model_cfg.tokenizer_name_or_path, "model.tokenizer_name_or_path", trust)
    elif model_cfg.get("pretrained_model_name_or_path"):
        tokenizer = load_tokenizer(model_cfg.pretrained_model_name_or_path, "model.pretrained_model_name_or_path",
                                   trust)
    else:
        tokenizer = train_tokenizer(datamodule_for_texts.training_texts(), model_cls.tokenizer_kind,
                                    int(model_cfg.tokenizer_vocab_size), cfg.paths.cache_dir)
    if tokenizer.pad_token is None:  # GPT-style tokenizers: pad with EOS (masked out by the attention mask)
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def build_datamodule(cfg: DictConfig, tokenizer: Any = None, objective: str | None = None,
                     splits: tuple[str, ...] | None = None) -> pl.LightningDataModule:
    """Instantiate `data` for the model's task (`objective`, default: that of `model`), loading only `splits`
    (None: all the source has)."""
    if objective is None and cfg.get("model"):
        objective = target_class(cfg.model, "model", allowed_targets(cfg)).task
    return safe_instantiate(cfg.data, "data", allowed_targets(cfg), tokenizer=tokenizer, objective=objective,
                            splits=splits)


def tokenizer_kwargs(tokenizer: Any) -> dict[str, Any]:
    """What every model takes from its tokenizer: the vocabulary size and the special token ids it defines."""
    special = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
               "eos_token_id": tokenizer.eos_token_id}
    return {"vocab_size": len(tokenizer), "special_token_ids": {k: v for k, v in special.items() if v is not None}}


def build_model(cfg: DictConfig, tokenizer: Any, datamodule: Any) -> pl.LightningModule:
    """Instantiate the module from its config, its tokenizer and what the data module says about the data
    (`model_kwargs()`, reconciled with the config by the module class)."""
    model_cls = target_class(cfg.model, "model", allowed_targets(cfg))
    configured = {k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items() if k != "_target_"}
    kwargs = model_cls.reconcile({**configured, **tokenizer_kwargs(tokenizer)}, datamodule.model_kwargs())
    check_targets(cfg.model, "model", allowed_targets(cfg))
    settle_from_data(cfg, model_cls, kwargs)
    module = model_cls(**kwargs)
    hand_over(module, tokenizer, datamodule)
    return module


def hand_over(module: Any, tokenizer: Any, datamodule: Any) -> None:
    """Give a built or loaded module what it uses but does not save: the tokenizer the data was encoded with
    and the data's attachments the module class declares (`data_attachments`)."""
    module.tokenizer = tokenizer
    for name, value in datamodule.model_attachments().items():
        if name in module.data_attachments:
            setattr(module, name, value)


def settle_from_data(cfg: DictConfig, model_cls: type, kwargs: dict[str, Any]) -> None:
    """Write what the data decided for the model's null `data_settled` settings into `cfg.model`, so the run's
    `${task_default:...}` metrics (monitor, optimized metric) follow it. A sweep trial refuses a change of the
    optimized metric: its sweeper chose the direction from the config before any data was read."""
    settled = {key: kwargs[key] for key in getattr(model_cls, "data_settled", ())
               if key in cfg.model and cfg.model.get(key) is None and kwargs.get(key) is not None}
    if not settled:
        return
    before = OmegaConf.select(cfg, "optimized_metric", default=None)
    with open_dict(cfg.model):
        for key, value in settled.items():
            cfg.model[key] = value
    after = OmegaConf.select(cfg, "optimized_metric", default=None)
    if before != after and TrialLink.from_env() is not None:
        given = " ".join(f"model.{k}={v}" for k, v in settled.items())
        raise UserError(f"the data makes the optimized metric {after}, not {before}: a sweep picks its direction "
                        f"before reading data, so set {given} on the command line")


def build_data_and_model(cfg: DictConfig) -> tuple[Any, Any, pl.LightningModule]:
    """Data module (tokenized, set up, with the splits the run needs), tokenizer and model, in the order
    `llm-train` creates them."""
    datamodule = build_datamodule(cfg)
    tokenizer = build_tokenizer(cfg, datamodule)
    datamodule.tokenizer = tokenizer
    datamodule.prepare_data()
    datamodule.setup("fit")
    datamodule.require_splits(*(["train", "validation"] if cfg.get("train", True) else []),
                              *(["test"] if cfg.get("test", False) else []))
    return datamodule, tokenizer, build_model(cfg, tokenizer, datamodule)


def _print_thread_hint(hardware: DictConfig) -> None:
    """On CPU (global rank 0): one line suggesting OMP_NUM_THREADS=1 when the cores are oversubscribed."""
    import torch
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    accelerator = str(hardware.get("accelerator", "auto")).lower()
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    hint = oversubscription_hint(torch.get_num_threads()) if on_cpu and rank_zero_only.rank == 0 else None
    if hint:
        print(hint, flush=True)


def build_trainer(cfg: DictConfig, loggers: list[Any], callbacks: list[Any]) -> pl.Trainer:
    """The Trainer of `llm-train` and `llm-eval`: `hardware` checked and turned into arguments, `trainer` loop
    settings (llm-eval has none), checkpointing on when a checkpoint callback is configured."""
    check_hardware(cfg.hardware)
    hardware = trainer_hardware_kwargs(cfg.hardware)
    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True) if cfg.get("trainer") else {}
    if OmegaConf.select(cfg, "model.compile", default=False):
        # Evaluation under no_grad, not inference_mode: batches made inside inference mode (the test loop's) are
        # inference tensors, whose dispatch keys fail the guards of the graph compiled for validation, so the test
        # pass compiled the model a third time (docs/benchmarks.md).
        trainer_kwargs.setdefault("inference_mode", False)
    enable_gpu_fast_paths(cfg.hardware)
    apply_thread_budget()  # a parallel sweep's share of the CPU
    _print_thread_hint(cfg.hardware)
    if not loggers:  # the LR monitor refuses to run without a logger; it has nothing to write to anyway
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.LearningRateMonitor)]
    trainer = pl.Trainer(**trainer_kwargs, **hardware, logger=loggers or False, callbacks=callbacks,
                         default_root_dir=cfg.paths.output_dir, enable_checkpointing=any(
                             isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks))
    write_checkpoints_directly(trainer)
    # ddp_spawn: a task's results.json details (`HFTaskModule.stage_details`) are set in the workers.
    compat.carry_from_spawned_workers(trainer, ("stage_details",))
    return trainer


def build_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    """The configured callbacks, plus Optuna reporting/pruning when this job runs a trial of our sweeper (not a
    config entry: `callbacks=none` must not silently turn a sweep's pruning off)."""
    callbacks = instantiate_collection(cfg.get("callbacks"), "callbacks", allowed_targets(cfg))
    link = TrialLink.from_env()
    if link is not None and cfg.get("train", True):
        callbacks.append(OptunaPruning(link, str(cfg.optimized_metric)))
    return callbacks


def build_loggers(cfg: DictConfig) -> list[Any]:
    return instantiate_collection(cfg.get("logger"), "logger", allowed_targets(cfg))


def tokenizer_dir(run_dir: str | Path) -> Path:
    """Where a run keeps its tokenizer (for eval/generate from a checkpoint)."""
    return Path(run_dir) / "tokenizer"
