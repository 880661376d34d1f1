"""Lightning callbacks the real-shape benchmarks add to `llm-train` (`+callbacks.<name>._target_=bench.phases.X`):
`PhaseTimer` stamps the loop's phases (scripts/bench/stamps.py), `FixedTrainingMasks` makes masked-LM training
masks the same function of each batch that the Trainer side uses."""

from __future__ import annotations

import pytorch_lightning as pl

from scripts.bench.stamps import stamp


class PhaseTimer(pl.Callback):
    """Stamps where Lightning's loop enters and leaves training, each validation and testing."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        stamp("train_start")

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit":
            stamp("eval_start", accumulate=True)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit":
            stamp("eval_end", accumulate=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        stamp("train_end")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        stamp("test_end")


class FixedTrainingMasks(pl.Callback):
    """Training masks seeded by each batch's token ids, as our evaluation masks are (`MaskingCollator`'s
    `deterministic`), instead of drawn from the global RNG: the Trainer side seeds its
    `DataCollatorForLanguageModeling` by the same rule (bench/hf_common.py), so both sides train on the same masks
    and their losses can be compared. The masking work itself is unchanged (plus one hash of the batch)."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.datamodule.collate_fn.deterministic = True
