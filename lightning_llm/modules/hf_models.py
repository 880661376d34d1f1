"""Build a transformers model: from a checkpoint's saved config, a pretrained id/folder, or size fields."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import AutoConfig, PretrainedConfig

from lightning_llm.errors import UserError, first_line

# Config attributes that hold dropout probabilities across common architectures (BERT, GPT-2, Llama, ...).
_DROPOUT_ATTRS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "resid_pdrop", "embd_pdrop", "attn_pdrop",
                  "dropout", "attention_dropout", "hidden_dropout", "summary_first_dropout")


def _check_local(name: str) -> None:
    if name.startswith((".", "/", "~")) and not Path(name).expanduser().exists():
        raise UserError(f"model.pretrained_model_name_or_path: directory not found: {name}")


def apply_dropout(config: PretrainedConfig, dropout: float | None) -> None:
    if dropout is None:
        return
    if not 0 <= dropout < 1:
        raise UserError(f"model.dropout must be in [0, 1), got {dropout}")
    for attr in _DROPOUT_ATTRS:
        if hasattr(config, attr):
            setattr(config, attr, dropout)


def build_config(*, pretrained_model_name_or_path: str | None, hf_config: dict[str, Any] | None,
                 model_type: str, size: dict[str, Any], extra: dict[str, Any], trust_remote_code: bool,
                 dropout: float | None) -> PretrainedConfig:
    """The model config: saved (checkpoint restore) > pretrained (+ task kwargs) > from scratch (size fields)."""
    if hf_config is not None:
        hf_config = dict(hf_config)
        config = AutoConfig.for_model(hf_config.pop("model_type"), **hf_config)
    elif pretrained_model_name_or_path:
        _check_local(pretrained_model_name_or_path)
        try:
            config = AutoConfig.from_pretrained(pretrained_model_name_or_path, trust_remote_code=trust_remote_code)
        except Exception as err:
            raise UserError(f"model.pretrained_model_name_or_path: cannot load {pretrained_model_name_or_path!r}: "
                            f"{first_line(err)}") from err
        for key, value in extra.items():
            setattr(config, key, value)
    else:
        try:
            config = AutoConfig.for_model(model_type, **{k: v for k, v in size.items() if v is not None}, **extra)
        except ValueError as err:
            raise UserError(f"model.model_type={model_type!r}: {first_line(err)}") from err
    apply_dropout(config, dropout)
    return config


def set_token_ids(model: Any, ids: dict[str, int]) -> None:
    """Special token ids on a built model's config, and on its generation config where that has none."""
    generation = getattr(model, "generation_config", None)
    for key, value in ids.items():
        setattr(model.config, key, value)
        if generation is not None and getattr(generation, key, None) is None:
            setattr(generation, key, value)


def build_model(auto_cls: Any, config: PretrainedConfig, *, pretrained_model_name_or_path: str | None,
                from_saved_config: bool, trust_remote_code: bool, attn_implementation: str | None) -> Any:
    """Instantiate `auto_cls` (e.g. AutoModelForCausalLM) with pretrained weights where asked."""
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if pretrained_model_name_or_path and not from_saved_config:
        try:
            return auto_cls.from_pretrained(pretrained_model_name_or_path, config=config,
                                            ignore_mismatched_sizes=True, **kwargs)
        except ValueError as err:
            raise UserError(f"model.pretrained_model_name_or_path={pretrained_model_name_or_path!r} cannot be used "
                            f"for this task: {first_line(err)}") from err
        except Exception as err:
            raise UserError(f"model.pretrained_model_name_or_path: cannot load {pretrained_model_name_or_path!r}: "
                            f"{first_line(err)}") from err
    try:
        return auto_cls.from_config(config, **kwargs)
    except ValueError as err:
        raise UserError(f"model: {config.model_type!r} cannot be used for this task: {first_line(err)}") from err
