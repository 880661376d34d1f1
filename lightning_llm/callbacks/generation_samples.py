"""Greedy continuations of fixed prompts after each validation: a quick look at what the model has learned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from pytorch_lightning.strategies import (
    DDPStrategy,
    DeepSpeedStrategy,
    SingleDeviceStrategy,
)
from transformers import GenerationConfig

from lightning_llm.modules.generation import generate_ids


class GenerationSamples(pl.Callback):
    """Rank 0 generates `max_new_tokens` greedily from each prompt when validation ends (not in the sanity check).

    Samples go to `<run>/generation_samples.txt`, to TensorBoard (`add_text`) and to W&B (a table via `log_text`)
    when those loggers are present. Greedy decoding draws no random numbers, so training RNG streams are unchanged.
    A no-op for modules of tasks that do not generate or are encoder-decoders, and under FSDP/DeepSpeed (sharded weights need every rank to generate).
    """

    def __init__(self, prompts: list[str], max_new_tokens: int = 24, every_n_validations: int = 1,
                 filename: str = "generation_samples.txt") -> None:
        self.prompts, self.max_new_tokens = list(prompts), max_new_tokens
        self.every_n_validations, self.filename = max(1, every_n_validations), filename
        self._validations = 0

    def _active(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> bool:
        strategy = trainer.strategy
        local = isinstance(strategy, SingleDeviceStrategy) or (
            isinstance(strategy, DDPStrategy) and not isinstance(strategy, DeepSpeedStrategy))
        decoder_only = getattr(pl_module, "generates", False) and not getattr(pl_module, "encoder_decoder", True)
        return (bool(self.prompts) and local and decoder_only
                and getattr(pl_module, "tokenizer", None) is not None)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not self._active(trainer, pl_module):
            return
        self._validations += 1
        if self._validations % self.every_n_validations or not trainer.is_global_zero:
            return
        samples = self.generate(pl_module.model, pl_module.tokenizer)
        self._log(trainer, samples)

    def generate(self, model: Any, tokenizer: Any) -> list[tuple[str, str]]:
        """(prompt, continuation) pairs; the model's train/eval mode is restored afterwards."""
        was_training = model.training
        model.eval()
        config = GenerationConfig(max_new_tokens=self.max_new_tokens, do_sample=False, use_cache=True,
                                  pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        try:
            ids = generate_ids(model, [tokenizer(p)["input_ids"] for p in self.prompts], config,
                               batch_size=len(self.prompts))
        finally:
            model.train(was_training)
        return [(p, tokenizer.decode(out[0], skip_special_tokens=True)) for p, out in zip(self.prompts, ids)]

    def _log(self, trainer: pl.Trainer, samples: list[tuple[str, str]]) -> None:
        step = trainer.global_step
        header = f"step {step} (epoch {trainer.current_epoch})"
        text = "\n".join(f"{prompt!r} -> {prompt}{continuation}" for prompt, continuation in samples)
        path = Path(trainer.default_root_dir) / self.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(f"{header}\n{text}\n\n")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_text(key="generation_samples", columns=["step", "prompt", "generation"],
                                data=[[step, p, p + c] for p, c in samples], step=step)
            elif isinstance(logger, TensorBoardLogger):
                markdown = "\n\n".join(f"**{p}**{c}" for p, c in samples)
                logger.experiment.add_text("generation_samples", markdown, global_step=step)
