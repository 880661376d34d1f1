"""Parameter-efficient fine-tuning with the `peft` library: `peft=lora` (or `model.peft=lora`) wraps a task's HF
model in LoRA adapters; only the adapters and the task head train. The merged model exports as a plain
`from_pretrained` folder, the adapter alone as a `peft` one."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, List, Optional

from torch import nn

from lightning_llm.errors import UserError, first_line
from lightning_llm.runtime.extras import require_extra

# LoRA target layers for architectures peft's own table (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING) does
# not know.
_TARGETS = {"modernbert": ["Wqkv"]}

@dataclasses.dataclass
class LoraSettings:
    """The `model.peft` node of `peft=lora` (conf/peft/lora.yaml): typed, so a wrong key or type fails while
    composing. Null `target_modules` = the architecture's attention projections (peft's table, then `_TARGETS`),
    plus the input token embeddings where the task asks for them (`lora_embeddings`); null `modules_to_save` = the task head
    peft picks for the task (none for language models)."""

    method: str = "lora"
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.1
    target_modules: Optional[List[str]] = None
    modules_to_save: Optional[List[str]] = None


def settings_from(config: Mapping[str, Any]) -> LoraSettings:
    """`model.peft` as given (a plain mapping, e.g. from a checkpoint's hyper-parameters), checked."""
    fields = {f.name for f in dataclasses.fields(LoraSettings)}
    unknown = sorted(set(config) - fields)
    if unknown:
        raise UserError(f"model.peft.{unknown[0]} is not a LoRA setting ({', '.join(sorted(fields))})")
    settings = LoraSettings(**config)
    if settings.method != "lora":
        raise UserError(f"model.peft.method={settings.method!r}: only 'lora' is supported")
    if not (isinstance(settings.r, int) and settings.r > 0):
        raise UserError(f"model.peft.r={settings.r!r}: must be a positive integer")
    if not settings.alpha > 0:
        raise UserError(f"model.peft.alpha={settings.alpha!r}: must be > 0")
    if not 0 <= settings.dropout < 1:
        raise UserError(f"model.peft.dropout={settings.dropout!r}: must be in [0, 1)")
    return settings


def default_targets(model: nn.Module, embeddings_too: bool) -> list[str]:
    """The architecture's attention projections (+ the input embeddings where the task asks for them: encoder tasks,
    whose frozen features may hardly hold the label; not language models, whose output layer is usually tied to the
    input embeddings, so merging an embedding adapter would change it too)."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS

    model_type = model.config.model_type
    targets = _TARGETS.get(model_type) or PEFT_TARGETS.get(model_type)
    if targets is None:
        raise UserError(f"model.peft.target_modules: no default for model_type {model_type!r}; name the layers to "
                        f"adapt, e.g. model.peft.target_modules=[q_proj,v_proj]")
    targets = list(targets)
    embeddings = model.get_input_embeddings()
    if embeddings_too and embeddings is not None:
        targets += [name for name, module in model.named_modules() if module is embeddings][:1]
    return targets


def wrap(model: nn.Module, config: Mapping[str, Any], task_type: str | None, embeddings_too: bool,
         new_token_ids: Sequence[int] | None = None) -> nn.Module:
    """`model` inside a peft LoRA model: base weights frozen, adapters (+ the task head) trainable. `task_type` is
    peft's (it decides the head that trains in full, peft's own modules_to_save, and the forward wrappers).
    `new_token_ids`: embedding rows the pretrained model never had (tokens added to its tokenizer), trained in full
    as peft's trainable tokens unless the embeddings are adapted or saved whole already."""
    peft = require_extra("peft", "peft", "model.peft")
    settings = settings_from(config)
    # Copies: peft extends the lists it is given (the task head joins modules_to_save), which would otherwise grow
    # the run's hyper-parameters.
    targets = list(settings.target_modules) if settings.target_modules else default_targets(model, embeddings_too)
    embedding_name = next((name for name, module in model.named_modules() if module is model.get_input_embeddings()),
                          None)
    whole = [*targets, *(settings.modules_to_save or [])]
    trained_in_full = embedding_name is not None and any(embedding_name.rsplit(".", 1)[-1] == t.rsplit(".", 1)[-1]
                                                         for t in whole)
    tokens = list(new_token_ids) if new_token_ids and not trained_in_full else None
    lora = peft.LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                           target_modules=targets, task_type=task_type,
                           modules_to_save=list(settings.modules_to_save) if settings.modules_to_save else None,
                           trainable_token_indices=tokens)
    try:
        return peft.get_peft_model(model, lora)
    except ValueError as err:  # e.g. a target module name the model does not have
        raise UserError(f"model.peft.target_modules={targets}: {first_line(err)}") from err


def is_wrapped(model: nn.Module) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "merge_and_unload")


def trainable_share(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


def describe(model: nn.Module) -> str:
    """One line for the start of a run: what LoRA adapts and the share of parameters that trains."""
    from peft.utils import ModulesToSaveWrapper

    config = model.peft_config["default"]
    trainable, total = trainable_share(model)
    heads = sorted(name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, ModulesToSaveWrapper))
    head = f" + {', '.join(heads)} in full" if heads else ""
    if config.trainable_token_indices:
        head += f" + {len(config.trainable_token_indices)} new token embeddings"
    targets = sorted({name.rsplit(".", 1)[-1] for name in config.target_modules})
    return (f"LoRA r={config.r} alpha={config.lora_alpha:g} on {', '.join(targets)}{head}: "
            f"{trainable:,} of {total:,} parameters train ({100 * trainable / total:.2f}%)")


# Below this a learning rate is a full fine-tuning one (BERT's paper: 2e-5 to 5e-5); LoRA's published rates start
# around it (the LoRA paper 2e-4 to 5e-4, peft's examples 1e-4 to 3e-4), and this package's default is 3e-3.
LOW_LORA_RATE = 1e-4


def low_rate_warning(learning_rate: float) -> str | None:
    """One warning line when a LoRA run's rate looks like a full fine-tuning one. Adapters start from zero (lora_B
    = 0) and barely move at such a rate; the run would only show it as a poor result. A warning, not an override:
    the rate the user gave is the one used (a longer run may want it)."""
    if learning_rate >= LOW_LORA_RATE:
        return None
    return (f"warning: model.learning_rate={learning_rate:g} with LoRA looks like a full fine-tuning rate: adapters "
            f"start from zero and usually need {LOW_LORA_RATE:g} or more (without model.learning_rate=, peft=lora "
            f"uses its own default, conf/peft/learning_rate/lora.yaml)")


def merged(model: nn.Module) -> nn.Module:
    """A plain transformers model with the adapters folded into the weights. A copy: the wrapped model keeps
    training (or testing) unchanged after an export."""
    return copy.deepcopy(model).merge_and_unload()


def save_adapter(model: nn.Module, directory: str | Path) -> None:
    """The adapter weights and config alone (+ the trained head): `PeftModel.from_pretrained(base, directory)`."""
    model.save_pretrained(str(directory), safe_serialization=True)
