"""`model_path=` of the inference commands (llm-generate, llm-explain, llm-compress): a .ckpt file, a run directory
(its hf_model/, else its best checkpoint), an HF model directory or a hub id, loaded as a transformers model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PreTrainedModel,
)

from lightning_llm.data.tokenizers import load_tokenizer
from lightning_llm.errors import UserError, first_line, require
from lightning_llm.runtime.checkpoints import load_module, looks_local, run_checkpoint, run_dir_of

# Architecture name suffix (config.architectures) -> the Auto class that rebuilds it with its head.
_AUTO_CLASSES: tuple[tuple[tuple[str, ...], Any], ...] = (
    (("ForSequenceClassification",), AutoModelForSequenceClassification),
    (("ForCausalLM", "LMHeadModel"), AutoModelForCausalLM),
    (("ForTokenClassification",), AutoModelForTokenClassification),
    (("ForQuestionAnswering",), AutoModelForQuestionAnswering),
    (("ForMaskedLM",), AutoModelForMaskedLM),
    (("ForConditionalGeneration",), AutoModelForSeq2SeqLM),
)


def resolve_model_path(model_path: str, key: str = "model_path") -> tuple[str, str]:
    """("checkpoint", path to a .ckpt) or ("hf", an HF model directory or hub id)."""
    path = Path(model_path).expanduser()
    if path.is_file():
        return "checkpoint", str(path)
    if path.is_dir() and (path / "config.json").is_file():
        return "hf", str(path)
    if path.is_dir() and (path / "hf_model" / "config.json").is_file():
        return "hf", str(path / "hf_model")
    if path.is_dir():
        ckpt = run_checkpoint(path)
        require(ckpt is not None, f"{key}: {path} has no config.json, hf_model/ or checkpoints/*.ckpt")
        return "checkpoint", str(ckpt)
    require(not looks_local(model_path), f"{key}: not found: {model_path}")
    return "hf", model_path


def checkpoint_tokenizer(ckpt_path: str | Path, key: str = "model_path") -> Any:
    """The tokenizer a run saved next to its checkpoints (<run>/tokenizer, else <run>/hf_model)."""
    run_dir = run_dir_of(ckpt_path)
    for candidate in (run_dir / "tokenizer", run_dir / "hf_model"):
        if (candidate / "tokenizer_config.json").is_file():
            return load_tokenizer(str(candidate), key)
    raise UserError(f"{key}: no tokenizer next to {ckpt_path} (looked in {run_dir}/tokenizer and "
                    f"{run_dir}/hf_model)")


def auto_class(architectures: list[str] | None) -> Any:
    """The Auto class for a config's `architectures` (AutoModel, without a head, when none matches)."""
    for suffixes, cls in _AUTO_CLASSES:
        if any(a.endswith(suffixes) for a in architectures or []):
            return cls
    return AutoModel


def load_hf_model(model_path: str, key: str = "model_path", trust_remote_code: bool = False,
                  **from_pretrained: Any) -> tuple[PreTrainedModel, Any]:
    """(HF model with its task head, in eval mode; its tokenizer) from any `model_path=` form. `from_pretrained`
    keywords (e.g. a `quantization_config`) apply to HF directories and hub ids."""
    kind, where = resolve_model_path(model_path, key)
    if kind == "checkpoint":
        model, tokenizer = load_module(where, key=key).model, checkpoint_tokenizer(where, key)
    else:
        try:
            config = AutoConfig.from_pretrained(where, trust_remote_code=trust_remote_code)
            model = auto_class(config.architectures).from_pretrained(where, trust_remote_code=trust_remote_code,
                                                                     **from_pretrained)
        except Exception as err:
            raise UserError(f"{key}: cannot load a model from {where!r}: {first_line(err)}") from err
        tokenizer = load_tokenizer(where, key, trust_remote_code)
    if tokenizer.pad_token_id is None:  # GPT-style tokenizers: pad with EOS (masked out by the attention mask)
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return model.eval(), tokenizer


def is_classifier(model: PreTrainedModel) -> bool:
    return type(model).__name__.endswith("ForSequenceClassification")


def is_causal_lm(model: PreTrainedModel) -> bool:
    return type(model).__name__.endswith(("ForCausalLM", "LMHeadModel"))
