"""`model_path=` of the inference commands (llm-generate, llm-predict, llm-explain, llm-compress): a .ckpt file, a run
directory (its hf_model/, else its best checkpoint), an HF model directory or a hub id, loaded as a transformers
model with its task head. One loader, so that every command reads the same forms in the same order with the same
errors; what a command can run is its `Accepts`, built from what the registered tasks declare."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.utils import get_class
from omegaconf import OmegaConf
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from lightning_llm import registry
from lightning_llm.config.targets import target_refusal
from lightning_llm.data.tokenizers import load_tokenizer
from lightning_llm.errors import UserError, first_line, require
from lightning_llm.runtime.checkpoints import load_module, run_checkpoint, run_dir_of, run_tokenizer
from lightning_llm.utils.paths import looks_local


@dataclass(frozen=True)
class Accepts:
    """What one command can run: the tasks whose module class has `capability`, and the one-line error for anything
    else. Asked when a model is loaded, so that a task of the user's own (imported on the way) counts too."""

    capability: Callable[[type], Any]
    command: str  # e.g. "llm-compress"
    does: str  # e.g. "quantizes"

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(registry.supporting(self.capability))

    @property
    def needs(self) -> str:
        return f"{self.command} {self.does} models of the tasks: {registry.describe(self.tasks)}"

    @property
    def untagged(self) -> str | None:
        """The task of a config.json naming no architecture (`bare_config_default`), if the command takes it."""
        return next((n for n in self.tasks if registry.get(n).bare_config_default), None)


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
    """The registered task of an HF config, from the head its `architectures` name (a task's
    `architecture_suffixes`), else from `is_encoder_decoder`; None when it names none we know."""
    tasks = registry.tasks()
    for name, cls in tasks.items():
        if cls.architecture_suffixes and any(a.endswith(cls.architecture_suffixes) for a in config.architectures or []):
            return name
    if getattr(config, "is_encoder_decoder", False):
        return next((name for name, cls in tasks.items() if cls.encoder_decoder), None)
    return None


def run_task(run_dir: Path, allowed: tuple[str, ...] = ()) -> str | None:
    """The task of the run that wrote `run_dir`, from its saved `model._target_` (a class of ours, or of a package
    in `allowed`, imported so that it registers); None when the run saved no config or names another package."""
    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        return None
    target = OmegaConf.select(OmegaConf.load(saved), "model._target_", default=None)
    if not isinstance(target, str) or target_refusal(registry.current_target(target), allowed) is not None:
        return None
    try:
        cls = get_class(registry.current_target(target))
    except Exception:  # a class that moved or was removed: tell the task from config.json instead
        return None
    return getattr(cls, "task", None) if getattr(cls, "task", None) in registry.tasks() else None


def auto_class(config: PretrainedConfig) -> Any:
    """The Auto class that rebuilds a config's model with its head (AutoModel, headless, when none is known)."""
    task = _config_task(config)
    return registry.get(task).auto_class if task else AutoModel


def load_model_path(model_path: str, accepts: Accepts, trust_remote_code: bool = False,
                    allowed: tuple[str, ...] = ()) -> LoadedModel:
    """The model of any `model_path=` form, refused in one line (before its weights load, for an HF model) unless
    its task is one `accepts` lists. `trust_remote_code` applies to HF directories and hub ids (a checkpoint is
    rebuilt from our own module classes, or from those of the packages in `allowed`: `allow_targets=`)."""
    kind, where = _resolve(model_path)
    if kind == "checkpoint":
        module = load_module(where, key="model_path", allowed=allowed)
        task = module.task
        require(task in accepts.tasks, f"model_path: {where} is a {task} checkpoint; {accepts.needs}")
        model, tokenizer = module.model, run_tokenizer(where, "model_path")
        run_dir, hparams = run_dir_of(where), dict(module.hparams)
    else:
        model, task = _from_pretrained(where, accepts, trust_remote_code, allowed)
        tokenizer = load_tokenizer(where, "model_path", trust_remote_code)
        run_dir, hparams = (Path(where).parent if Path(where).name == "hf_model" else None), {}
    if tokenizer.pad_token_id is None:  # GPT-style tokenizers: pad with EOS (masked out by the attention mask)
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return LoadedModel(model.eval(), tokenizer, task, where, run_dir, hparams)


def _from_pretrained(where: str, accepts: Accepts, trust_remote_code: bool,
                     allowed: tuple[str, ...]) -> tuple[PreTrainedModel, str]:
    try:
        config = AutoConfig.from_pretrained(where, trust_remote_code=trust_remote_code)
    except Exception as err:
        raise UserError(f"model_path: cannot load a model from {where!r}: {first_line(err)}") from err
    architectures = config.architectures or []
    run_dir = Path(where).parent if Path(where).name == "hf_model" else None
    task = (run_task(run_dir, allowed) if run_dir else None) or _config_task(config) or \
        (accepts.untagged if not architectures else None)
    require(task in accepts.tasks, f"model_path: {where} holds a "
                                   f"{'/'.join(architectures) or 'model of unknown architecture'}; {accepts.needs}")
    try:
        model = registry.get(task).auto_class.from_pretrained(where, trust_remote_code=trust_remote_code)
    except Exception as err:
        raise UserError(f"model_path: cannot load a model from {where!r}: {first_line(err)}") from err
    return model, task
