"""`model_path=` of the inference commands (llm-generate, llm-predict, llm-explain, llm-compress): a .ckpt file, a run
directory (its hf_model/, else its best checkpoint), an HF model directory or a hub id, loaded as a transformers
model with its task head. One loader, so that every command reads the same forms in the same order with the same
errors; what a command can run is its `Accepts`."""

from __future__ import annotations

from dataclasses import dataclass
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
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lightning_llm.data.tokenizers import load_tokenizer
from lightning_llm.errors import UserError, first_line, require
from lightning_llm.runtime.checkpoints import load_module, run_checkpoint, run_dir_of, run_tokenizer
from lightning_llm.utils.paths import looks_local

# Our task name (what a checkpoint's module declares as `task`) -> the suffixes of the HF architecture names with
# its head, and the Auto class that rebuilds it. Seq2seq is told by `is_encoder_decoder` instead (MarianMTModel has
# no such suffix, and multimodal *ForConditionalGeneration models are no encoder-decoders).
_HEADS: dict[str, tuple[tuple[str, ...], Any]] = {
    "classification": (("ForSequenceClassification",), AutoModelForSequenceClassification),
    "token_classification": (("ForTokenClassification",), AutoModelForTokenClassification),
    "question_answering": (("ForQuestionAnswering",), AutoModelForQuestionAnswering),
    "masked_lm": (("ForMaskedLM",), AutoModelForMaskedLM),
    "causal_lm": (("ForCausalLM", "LMHeadModel"), AutoModelForCausalLM),
    "seq2seq": ((), AutoModelForSeq2SeqLM),
}


@dataclass(frozen=True)
class Accepts:
    """What one command can run: task names, and the end of its one-line error for anything else."""

    tasks: tuple[str, ...]
    needs: str  # e.g. "llm-compress quantizes sequence classifiers"
    untagged: str | None = None  # the task of a config.json naming no architecture (llm-generate: causal_lm)


@dataclass(frozen=True)
class LoadedModel:
    """A model from `model_path=` and what the commands need to know about where it came from."""

    model: PreTrainedModel  # in eval mode
    tokenizer: PreTrainedTokenizerBase  # with a pad token
    task: str  # one of the command's `Accepts.tasks`
    source: str  # the .ckpt file, HF directory or hub id actually loaded
    run_dir: Path | None  # the run that wrote it (its .hydra/ config); None for an HF dir outside a run or a hub id
    hparams: dict[str, Any]  # a checkpoint module's hyper-parameters ({} for HF)


def _resolve(model_path: str) -> tuple[str, str]:
    """("checkpoint", path to a .ckpt) or ("hf", an HF model directory or hub id). A local-looking path that does
    not exist fails at once instead of after ~35 s of hub retries."""
    path = Path(model_path).expanduser()
    if path.is_file():
        return "checkpoint", str(path)
    if path.is_dir() and (path / "config.json").is_file():
        return "hf", str(path)
    if path.is_dir() and (path / "hf_model" / "config.json").is_file():
        return "hf", str(path / "hf_model")
    if path.is_dir():
        ckpt = run_checkpoint(path)
        require(ckpt is not None, f"model_path: {path} has no config.json, hf_model/ or checkpoints/*.ckpt")
        return "checkpoint", str(ckpt)
    require(not looks_local(model_path), f"model_path: not found: {model_path}")
    return "hf", model_path


def _config_task(config: PretrainedConfig) -> str | None:
    """Our task name for an HF config, from the head its `architectures` name; None when it names none we know."""
    for task, (suffixes, _) in _HEADS.items():
        if suffixes and any(a.endswith(suffixes) for a in config.architectures or []):
            return task
    return "seq2seq" if getattr(config, "is_encoder_decoder", False) else None


def auto_class(config: PretrainedConfig) -> Any:
    """The Auto class that rebuilds a config's model with its head (AutoModel, headless, when none is known)."""
    task = _config_task(config)
    return _HEADS[task][1] if task else AutoModel


def load_model_path(model_path: str, accepts: Accepts, trust_remote_code: bool = False) -> LoadedModel:
    """The model of any `model_path=` form, refused in one line (before its weights load, for an HF model) unless
    its task is one `accepts` lists. `trust_remote_code` applies to HF directories and hub ids (a checkpoint is
    rebuilt from our own module classes)."""
    kind, where = _resolve(model_path)
    if kind == "checkpoint":
        module = load_module(where, key="model_path")
        task = module.task
        require(task in accepts.tasks, f"model_path: {where} is a {task} checkpoint; {accepts.needs}")
        model, tokenizer = module.model, run_tokenizer(where, "model_path")
        run_dir, hparams = run_dir_of(where), dict(module.hparams)
    else:
        model, task = _from_pretrained(where, accepts, trust_remote_code)
        tokenizer = load_tokenizer(where, "model_path", trust_remote_code)
        run_dir, hparams = (Path(where).parent if Path(where).name == "hf_model" else None), {}
    if tokenizer.pad_token_id is None:  # GPT-style tokenizers: pad with EOS (masked out by the attention mask)
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return LoadedModel(model.eval(), tokenizer, task, where, run_dir, hparams)


def _from_pretrained(where: str, accepts: Accepts, trust_remote_code: bool) -> tuple[PreTrainedModel, str]:
    try:
        config = AutoConfig.from_pretrained(where, trust_remote_code=trust_remote_code)
    except Exception as err:
        raise UserError(f"model_path: cannot load a model from {where!r}: {first_line(err)}") from err
    architectures = config.architectures or []
    task = _config_task(config) or (accepts.untagged if not architectures else None)
    require(task in accepts.tasks, f"model_path: {where} holds a "
                                   f"{'/'.join(architectures) or 'model of unknown architecture'}; {accepts.needs}")
    try:
        model = _HEADS[task][1].from_pretrained(where, trust_remote_code=trust_remote_code)
    except Exception as err:
        raise UserError(f"model_path: cannot load a model from {where!r}: {first_line(err)}") from err
    return model, task
