"""The shared LightningModule: builds the HF model, AdamW with decay groups, warmup schedule, export."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from transformers import get_scheduler

from lightning_llm.modules.hf_models import build_config, build_model

# Generic size-field names mapped to what an architecture calls them (HF's attribute_map covers the rest).
_SIZE_ALIASES = {"gpt2": {"intermediate_size": "n_inner"}}
_NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "ln_1.weight", "ln_2.weight", "ln_f.weight",
             "norm.weight")


class HFTaskModule(pl.LightningModule):
    """Wraps one `transformers` Auto* model. Hyper-parameters are primitives only, so checkpoints load with
    `weights_only=True`; the model's config is saved in them, so restoring never needs the hub."""

    auto_class: ClassVar[Any]
    task: ClassVar[str]
    tokenizer_kind: ClassVar[str]  # what to train when a from-scratch model has no tokenizer

    def __init__(self, *, pretrained_model_name_or_path: str | None = None, tokenizer_name_or_path: str | None = None,
                 tokenizer_vocab_size: int = 8000, model_type: str = "bert", hidden_size: int | None = None,
                 num_hidden_layers: int | None = None, num_attention_heads: int | None = None,
                 intermediate_size: int | None = None, max_position_embeddings: int | None = None,
                 config_overrides: dict[str, Any] | None = None, dropout: float | None = None,
                 learning_rate: float = 5e-5, weight_decay: float = 0.01, warmup_ratio: float = 0.06,
                 adam_epsilon: float = 1e-8, adam_betas: tuple[float, float] | list[float] = (0.9, 0.999),
                 lr_scheduler: str = "linear", gradient_checkpointing: bool = False, compile: bool = False,
                 attn_implementation: str | None = "sdpa", trust_remote_code: bool = False,
                 vocab_size: int | None = None, special_token_ids: dict[str, int] | None = None,
                 hf_config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        size = {"hidden_size": hidden_size, "num_hidden_layers": num_hidden_layers,
                "num_attention_heads": num_attention_heads, "intermediate_size": intermediate_size,
                "max_position_embeddings": max_position_embeddings, "vocab_size": vocab_size}
        aliases = _SIZE_ALIASES.get(model_type, {})
        size = {aliases.get(k, k): v for k, v in size.items()}
        extra = {**(special_token_ids or {}), **self.task_config(), **(config_overrides or {})}
        config = build_config(pretrained_model_name_or_path=pretrained_model_name_or_path, hf_config=hf_config,
                              model_type=model_type, size=size, extra=extra, trust_remote_code=trust_remote_code,
                              dropout=dropout)
        self.model = build_model(self.auto_class, config, pretrained_model_name_or_path=pretrained_model_name_or_path,
                                 from_saved_config=hf_config is not None, trust_remote_code=trust_remote_code,
                                 attn_implementation=attn_implementation)
        if vocab_size and self.model.get_input_embeddings().num_embeddings < vocab_size:
            self.model.resize_token_embeddings(vocab_size, pad_to_multiple_of=8)
        # Saved so that `load_from_checkpoint` rebuilds this exact architecture without downloading anything.
        self.hparams["hf_config"] = self.model.config.to_dict()
        # from_pretrained returns the model in eval mode and Lightning keeps module modes: without this,
        # dropout would be off whenever a pretrained model is fine-tuned.
        self.model.train()
        if gradient_checkpointing:
            self.model.gradient_checkpointing_enable()

    def task_config(self) -> dict[str, Any]:
        """Task-specific config fields (e.g. num_labels); overridden by subclasses."""
        return {}

    def configure_model(self) -> None:
        if self.hparams.compile and not getattr(self, "_compiled", False):
            self.model.compile()  # in place: parameter names (and so checkpoints) stay the same
            self._compiled = True

    def forward(self, **batch: torch.Tensor) -> Any:
        return self.model(**batch)

    def log_train_loss(self, loss: torch.Tensor) -> None:
        """`train/loss` on the steps whose metrics Lightning writes to the loggers (every
        `trainer.log_every_n_steps`) only: values logged in between are never written, and each `self.log` call
        costs ~1 ms of Python in Lightning (it copies the metric's metadata per call; B1 profile). Not `prog_bar`:
        the bar would read the tensor back, a CUDA sync, every step (see `LogIntervalProgressBar`)."""
        trainer = self.trainer
        if getattr(trainer._logger_connector, "should_update_logs", True) or trainer.fast_dev_run:
            self.log("train/loss", loss, on_step=True, on_epoch=False)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        decay, no_decay = [], []
        for name, param in self.named_parameters():
            if param.requires_grad:
                (no_decay if name.endswith(_NO_DECAY) or param.ndim < 2 else decay).append(param)
        groups = [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        # Fused AdamW on CPU too: ~8x faster optimizer steps than the default per-tensor loop for the demo models
        # on 2 cores (1.5 vs 12 ms), ~2% of a gpt_demo training step. Lightning refuses gradient clipping with a
        # fused optimizer under mixed precision (it unscales internally): the default kernel is used there.
        mixed = str(self.trainer.precision).endswith("-mixed")
        fused = self.device.type in ("cuda", "cpu") and not (mixed and self.trainer.gradient_clip_val)
        optimizer = torch.optim.AdamW(groups, lr=hp.learning_rate, eps=hp.adam_epsilon, betas=tuple(hp.adam_betas),
                                      fused=fused)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = get_scheduler(hp.lr_scheduler, optimizer, num_warmup_steps=int(hp.warmup_ratio * total),
                                  num_training_steps=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lets `llm-eval`/`llm-generate` pick the module class from the checkpoint alone.
        checkpoint["lightning_llm_module"] = f"{type(self).__module__}.{type(self).__qualname__}"

    def export(self, directory: str | Path, tokenizer: Any) -> None:
        """`save_pretrained` model (safetensors) and tokenizer into `directory`."""
        self.model.save_pretrained(str(directory), safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(directory))
