"""What the transformers `Trainer` scripts of the real-shape benchmarks share: phase stamps from Trainer callbacks,
our training order (for loss parity), masked-LM masks chosen by our rule, and the training arguments a user sets
for the same work as `llm-train` (evaluate and checkpoint each epoch, keep and reload the best)."""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import RandomSampler, Sampler
from transformers import DataCollatorForLanguageModeling, Trainer, TrainerCallback, TrainingArguments

from scripts.bench.stamps import stamp


class EvalStamps(TrainerCallback):
    """Evaluation runs between the end of an epoch and `on_evaluate` (then the checkpoint is saved)."""

    def on_epoch_end(self, args, state, control, **kwargs):
        stamp("eval_start", accumulate=True)

    def on_evaluate(self, args, state, control, **kwargs):
        stamp("eval_end", accumulate=True)


class SameOrderTrainer(Trainer):
    """Our first epoch's order: `randperm` from a generator seeded with the data seed (our
    `ResumableRandomSampler`), or with `train_sampling_strategy="group_by_length"` the Trainer's own
    `LengthGroupedSampler` drawing from that generator (our `LengthGroupedSampler` draws the same)."""

    data_seed = 42

    def _get_train_sampler(self, train_dataset: Any = None) -> Sampler:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        generator = torch.Generator().manual_seed(self.data_seed)
        if self.args.train_sampling_strategy == "group_by_length":
            sampler = super()._get_train_sampler(dataset)
            sampler.generator = generator
            return sampler
        return RandomSampler(dataset, generator=generator)


def batch_seed(examples: list[dict[str, Any]], seed: int) -> int:
    """The seed lightning_llm's `MaskingCollator(deterministic=True)` derives from a batch (masking.py)."""
    digest = hashlib.blake2b(str(seed or 0).encode(), digest_size=8)
    for example in examples:
        digest.update(np.asarray(example["input_ids"], dtype=np.int64).tobytes())
        digest.update(b"|")
    return int.from_bytes(digest.digest(), "little") & 0x7FFF_FFFF_FFFF_FFFF


@dataclass
class SameMasksCollator(DataCollatorForLanguageModeling):
    """The library collator (15%, 80/10/10, its own special-token detection), its generator seeded per batch by
    `batch_seed`: the masks our side draws, in training (bench.phases.FixedTrainingMasks) and evaluation."""

    mask_seed: int = 42

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        self.generator = torch.Generator().manual_seed(batch_seed(examples, self.mask_seed))
        return super().torch_call(examples)


def common_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options of every Trainer script (the driver passes the values our side is configured with)."""
    for name in ("model", "train", "validation", "test", "out"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--warmup-ratio", type=float, default=0.1)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--adam-beta2", type=float, default=0.999)
    parser.add_argument("--scheduler", default="linear")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--group-by-length", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (torch_compile=True)")


def training_arguments(a: argparse.Namespace, train_rows: int, best_metric: str, greater_is_better: bool,
                       **extra: Any) -> TrainingArguments:
    """Our settings in Trainer terms: fused AdamW, the same warm-up steps (int(ratio * steps)), clipping at 1.0,
    fp32, evaluation + checkpoint each epoch, the best kept and reloaded at the end."""
    steps = -(-train_rows // a.batch_size) * a.epochs
    return TrainingArguments(
        output_dir=a.out, per_device_train_batch_size=a.batch_size, per_device_eval_batch_size=a.eval_batch_size,
        num_train_epochs=a.epochs, learning_rate=a.lr, weight_decay=a.weight_decay, adam_beta2=a.adam_beta2,
        warmup_steps=int(a.warmup_ratio * steps), lr_scheduler_type=a.scheduler, max_grad_norm=1.0,
        optim="adamw_torch_fused", eval_strategy="epoch", save_strategy="epoch", save_total_limit=1,
        load_best_model_at_end=True, metric_for_best_model=best_metric, greater_is_better=greater_is_better,
        logging_steps=10, report_to="none", seed=a.seed, use_cpu=not torch.cuda.is_available(),
        dataloader_pin_memory=False, accelerator_config={"use_seedable_sampler": False},
        train_sampling_strategy="group_by_length" if a.group_by_length else "random", torch_compile=a.compile,
        **extra)
