"""Turn a composed config into parts: tokenizer, data module, model, trainer. Hydra stops here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from lightning_llm.config.targets import (
    check_targets,
    instantiate_collection,
    safe_instantiate,
)
from lightning_llm.data.tokenizers import load_tokenizer, train_tokenizer
from lightning_llm.errors import UserError
from lightning_llm.runtime.hardware import enable_gpu_fast_paths
from lightning_llm.runtime.hardware import trainer_kwargs as trainer_hardware_kwargs

# Keys of `model` consumed here (tokenizer resolution) or filled in from the data, not passed through as-is.
_DERIVED_MODEL_KEYS = ("vocab_size", "special_token_ids", "num_labels", "label_names")


def target_class(node: DictConfig, where: str) -> type:
    check_targets(node, where)
    if "_target_" not in node:
        raise UserError(f"{where}._target_ is missing: pick a config with {where}=<option>")
    try:
        return get_class(node._target_)
    except Exception as err:
        raise UserError(f"{where}._target_={node._target_!r} cannot be imported") from err


def check_task_pair(cfg: DictConfig) -> None:
    """A model and a data module of different tasks (e.g. gpt + text_classification) fail before any work."""
    model_cls, data_cls = target_class(cfg.model, "model"), target_class(cfg.data, "data")
    model_task, data_tasks = getattr(model_cls, "task", None), getattr(data_cls, "tasks", None)
    data_tasks = data_tasks or {getattr(data_cls, "task", None)}
    if model_task not in data_tasks:
        raise UserError(f"model {model_cls.__name__} ({model_task}) cannot train on data {data_cls.__name__} "
                        f"({'/'.join(sorted(map(str, data_tasks)))}): pick matching model= and data= options")


def build_tokenizer(cfg: DictConfig, datamodule_for_texts: Any) -> Any:
    """The model's own tokenizer, an explicit one, or one trained on the training text (from scratch)."""
    model_cfg, model_cls = cfg.model, target_class(cfg.model, "model")
    trust = bool(model_cfg.get("trust_remote_code", False))
    if model_cfg.get("tokenizer_name_or_path"):
        tokenizer = load_tokenizer(model_cfg.tokenizer_name_or_path, "model.tokenizer_name_or_path", trust)
    elif model_cfg.get("pretrained_model_name_or_path"):
        tokenizer = load_tokenizer(model_cfg.pretrained_model_name_or_path, "model.pretrained_model_name_or_path",
                                   trust)
    else:
        tokenizer = train_tokenizer(datamodule_for_texts.training_texts(), model_cls.tokenizer_kind,
                                    int(model_cfg.get("tokenizer_vocab_size", 8000)), cfg.paths.cache_dir)
    if tokenizer.pad_token is None:  # GPT-style tokenizers: pad with EOS (masked out by the attention mask)
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def build_datamodule(cfg: DictConfig, tokenizer: Any = None) -> pl.LightningDataModule:
    """Instantiate `data`; modules serving several objectives (the corpus) get the model's task as objective."""
    kwargs: dict[str, Any] = {"tokenizer": tokenizer}
    if len(getattr(target_class(cfg.data, "data"), "tasks", ())) > 1 and cfg.get("model"):
        kwargs["objective"] = target_class(cfg.model, "model").task
    return safe_instantiate(cfg.data, "data", **kwargs)


def build_model(cfg: DictConfig, tokenizer: Any, datamodule: Any) -> pl.LightningModule:
    """Instantiate the module with what the tokenizer and data determine (vocab, special ids, labels)."""
    kwargs: dict[str, Any] = {"vocab_size": len(tokenizer),
                              "special_token_ids": {k: v for k, v in {
                                  "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
                                  "eos_token_id": tokenizer.eos_token_id}.items() if v is not None}}
    if getattr(datamodule, "num_labels", None) is not None:
        num_labels = cfg.model.get("num_labels") or datamodule.num_labels
        if datamodule.max_label >= num_labels:
            raise UserError(f"data.label_column={cfg.data.label_column!r}: label {datamodule.max_label} is outside "
                            f"model.num_labels={num_labels}")
        kwargs["num_labels"] = num_labels
        names = datamodule.label_names
        kwargs["label_names"] = names if names and len(names) == num_labels else None
    model_cfg = OmegaConf.masked_copy(cfg.model, [k for k in cfg.model if k not in _DERIVED_MODEL_KEYS])
    return safe_instantiate(model_cfg, "model", **kwargs)


def build_data_and_model(cfg: DictConfig) -> tuple[Any, Any, pl.LightningModule]:
    """Data module (tokenized, set up), tokenizer and model, in the order `llm-train` creates them."""
    datamodule = build_datamodule(cfg)
    tokenizer = build_tokenizer(cfg, datamodule)
    datamodule.tokenizer = tokenizer
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule, tokenizer, build_model(cfg, tokenizer, datamodule)


def build_trainer(cfg: DictConfig, loggers: list[Any], callbacks: list[Any]) -> pl.Trainer:
    hardware = trainer_hardware_kwargs(cfg.hardware)
    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    enable_gpu_fast_paths(cfg.hardware)
    if not loggers:  # the LR monitor refuses to run without a logger; it has nothing to write to anyway
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.LearningRateMonitor)]
    return pl.Trainer(**trainer_kwargs, **hardware, logger=loggers or False, callbacks=callbacks,
                      default_root_dir=cfg.paths.output_dir, enable_checkpointing=any(
                          isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks))


def build_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    return instantiate_collection(cfg.get("callbacks"), "callbacks")


def build_loggers(cfg: DictConfig) -> list[Any]:
    return instantiate_collection(cfg.get("logger"), "logger")


def tokenizer_dir(run_dir: str | Path) -> Path:
    """Where a run keeps its tokenizer (for eval/generate from a checkpoint)."""
    return Path(run_dir) / "tokenizer"
