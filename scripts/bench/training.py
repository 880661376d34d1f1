"""B1 (our causal-LM training vs a plain PyTorch loop) and B2 (our classification training vs transformers'
Trainer): same initial weights, batches, optimizer and schedule on both sides, alternating timed rounds."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, RandomSampler
from transformers import (
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    get_scheduler,
)

from scripts.bench.harness import Alternation, Result, parity_text, profile_summary, workdir
from scripts.bench.parts import OurRun, build_our_run

# Dropout off: the two sides draw from one global RNG in turns, so with dropout on their losses could not be
# compared step by step. Validation off: the baselines have none (what it costs is in the validation loop).
_COMMON = ["model.dropout=0.0", "++trainer.limit_val_batches=0"]
# The same float32 computation on both sides; summation order (e.g. of the gradient norm) moves losses by ~1e-6.
LOSS_TOL = 1e-4


@dataclass
class Sizes:
    warmup: int = 5
    steps: int = 10
    rounds: int = 6
    overrides: tuple[str, ...] = ()  # extra llm-train overrides for our side (B1/B2), e.g. to bisect an overhead
    profile_to: Path | None = None  # cProfile each side into <profile_to>-<side>.prof


class StepHook(pl.Callback):
    """Tells the alternation that our side finished an optimizer step (Lightning's loss output is detached)."""

    def __init__(self, alternation: Alternation, side: int) -> None:
        self.alternation, self.side = alternation, side

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.alternation.step_done(self.side, outputs["loss"])


def _infinite(loader: DataLoader) -> Iterator[Any]:
    while True:
        yield from loader


def same_order_sampler(dataset: Any, seed: int) -> RandomSampler:
    """The first-epoch permutation of our training loader (a `randperm` from a generator seeded with `seed`)."""
    return RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))


def our_adamw_flags(run: OurRun) -> dict[str, Any]:
    """The implementation flags of the AdamW our module built (read once our side has started)."""
    defaults = run.model.trainer.optimizers[0].defaults
    return {"fused": defaults.get("fused"), "foreach": defaults.get("foreach")}


def adamw_like_ours(model: torch.nn.Module, hp: Any, flags: dict[str, Any]) -> torch.optim.AdamW:
    """AdamW with the usual two groups: matrices decay, biases and norm weights (1-D) do not."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": hp.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=hp.learning_rate, eps=hp.adam_epsilon, betas=tuple(hp.adam_betas), **flags)


def plain_loop(model: torch.nn.Module, loader: DataLoader, hp: Any, total: int, clip: float | None,
               on_step: Callable[[torch.Tensor], None], adamw_flags: dict[str, Any] | None = None) -> None:
    """The minimal training loop: forward, backward, clip, AdamW step, scheduler step, zero grad."""
    optimizer = adamw_like_ours(model, hp, adamw_flags or {})
    scheduler = get_scheduler(hp.lr_scheduler, optimizer, num_warmup_steps=int(hp.warmup_ratio * total),
                              num_training_steps=total)
    model.train()
    batches = _infinite(loader)
    for _ in range(total):
        batch = next(batches)
        loss = model(**batch).loss
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        on_step(loss)


def check_one_epoch(name: str, alt: Alternation, dataset: Any, batch_size: int) -> None:
    """Every side must see the same batches: past the first epoch each shuffles with its own generator state."""
    batches = -(-len(dataset) // batch_size)
    if alt.total_steps > batches:
        raise SystemExit(f"{name}: {alt.total_steps} steps (warm-up + steps x rounds) exceed one epoch of {batches} "
                         f"batches: use fewer --rounds")


def _stack_blocks(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    input_ids = torch.tensor([e["input_ids"] for e in examples], dtype=torch.long)
    return {"input_ids": input_ids, "labels": input_ids}


def _print_profiles(sizes: Sizes, names: list[str]) -> None:
    if sizes.profile_to is not None:
        for i, name in enumerate(names):
            print(f"profile of {name} ({sizes.rounds * sizes.steps} timed steps):\n"
                  f"{profile_summary(f'{sizes.profile_to}-{i}.prof', sizes.rounds * sizes.steps)}")


def _fit(run: OurRun, alternation: Alternation, side: int, drop: tuple[type, ...] = (),
         logger: bool = True) -> None:
    trainer = run.trainer([StepHook(alternation, side)], drop=drop, logger=logger)
    trainer.fit(run.model, datamodule=run.datamodule)


def b1(sizes: Sizes, smoke: bool = False) -> Result:
    """Our causal-LM training path (Lightning Trainer + CausalLMModule + our collator, default callbacks and CSV
    logger as llm-train builds them) vs a minimal PyTorch loop on the same tiny GPT and batches."""
    root = workdir("b1")
    alt = Alternation(2, sizes.warmup, sizes.steps, sizes.rounds)
    overrides = ["experiment=gpt_demo", *_COMMON, f"trainer.max_steps={alt.total_steps}", *sizes.overrides]
    if smoke:
        overrides += ["model.hidden_size=32", "model.num_hidden_layers=1", "model.intermediate_size=64",
                      "model.num_attention_heads=2", "model.tokenizer_vocab_size=300", "data.batch_size=4"]
    run = build_our_run(overrides, root / "run", root / "cache")
    plain_model = copy.deepcopy(run.model.model)  # identical initial weights
    dm, cfg = run.datamodule, run.cfg
    train = dm.datasets["train"]
    check_one_epoch("B1", alt, train, dm.batch_size)
    loader = DataLoader(train, batch_size=dm.batch_size, sampler=same_order_sampler(train, dm.seed),
                        collate_fn=_stack_blocks)
    alt.run([lambda i: _fit(run, alt, i),
             lambda i: plain_loop(plain_model, loader, run.model.hparams, alt.total_steps,
                                  cfg.trainer.gradient_clip_val, lambda loss: alt.step_done(i, loss),
                                  our_adamw_flags(run))], sizes.profile_to)
    _print_profiles(sizes, ["ours", "plain"])
    tokens = dm.batch_size * dm.block_size * sizes.steps
    ours, plain = alt.median_time(0), alt.median_time(1)
    return Result("B1", f"causal-LM training, tokens/s (gpt_demo GPT, batch {dm.batch_size}x{dm.block_size})",
                  f"{tokens / ours:,.0f} tok/s", f"{tokens / plain:,.0f} tok/s (plain PyTorch loop)",
                  alt.ratio(0, 1), ">= 0.97", parity_text(alt.loss_diff(), LOSS_TOL),
                  [f"round times (s): {alt.round_times(['ours', 'plain'])}",
                   f"our loop costs {(ours - plain) / sizes.steps * 1e3:+.1f} ms per step over the plain loop's "
                   f"{plain / sizes.steps * 1e3:.1f} ms (medians)"])


class _HFStepHook(TrainerCallback):
    def __init__(self, trainer_ref: list[Any], alternation: Alternation, side: int) -> None:
        self.trainer_ref, self.alternation, self.side = trainer_ref, alternation, side

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.alternation.step_done(self.side, self.trainer_ref[0].last_loss)


class _SameOrderTrainer(Trainer):
    """transformers' Trainer, told to draw our permutation of the training set and to remember each step's loss
    (the loss it returns anyway) for the parity check."""

    data_seed: int = 0
    last_loss: torch.Tensor | None = None

    def _get_train_sampler(self, train_dataset: Any = None) -> RandomSampler:
        return same_order_sampler(train_dataset if train_dataset is not None else self.train_dataset, self.data_seed)

    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None
                      ) -> torch.Tensor:
        self.last_loss = super().training_step(model, inputs, num_items_in_batch)
        return self.last_loss


def hf_trainer(run: OurRun, model: torch.nn.Module, total: int, output_dir: str) -> _SameOrderTrainer:
    """The transformers Trainer as its docs set it up, extras off like ours: no evaluation, no saving, no
    reporting. What remains on both sides: a progress bar, loss logging every `log_every_n_steps`, clipping."""
    hp, cfg = run.model.hparams, run.cfg
    args = TrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=run.datamodule.batch_size, max_steps=total,
        learning_rate=hp.learning_rate, weight_decay=hp.weight_decay, adam_beta1=hp.adam_betas[0],
        adam_beta2=hp.adam_betas[1], adam_epsilon=hp.adam_epsilon, lr_scheduler_type=hp.lr_scheduler,
        warmup_steps=int(hp.warmup_ratio * total), max_grad_norm=cfg.trainer.gradient_clip_val,
        eval_strategy="no", save_strategy="no", report_to="none", logging_steps=cfg.trainer.log_every_n_steps,
        dataloader_pin_memory=False, seed=cfg.seed, use_cpu=not torch.cuda.is_available(),
        accelerator_config={"use_seedable_sampler": False})
    trainer = _SameOrderTrainer(model=model, args=args, train_dataset=run.datamodule.datasets["train"],
                                data_collator=DataCollatorWithPadding(run.tokenizer, pad_to_multiple_of=8))
    trainer.data_seed = run.datamodule.seed
    return trainer


def _train_hf(trainer: _SameOrderTrainer, run: OurRun) -> None:
    # The same AdamW implementation as ours (fused is also the Trainer's default, "adamw_torch_fused").
    trainer.args.optim = "adamw_torch_fused" if our_adamw_flags(run)["fused"] else "adamw_torch"
    trainer.train()


def b2(sizes: Sizes, smoke: bool = False) -> Result:
    """Our classification training vs transformers' Trainer: same tiny BERT, data, batch, dynamic padding; a plain
    loop on the same batches as a third side shows the floor (what a trainer costs over no trainer at all)."""
    root = workdir("b2")
    alt = Alternation(3, sizes.warmup, sizes.steps, sizes.rounds)
    overrides = ["experiment=classify_demo", *_COMMON, f"trainer.max_steps={alt.total_steps}", "logger=none",
                 *sizes.overrides]
    if smoke:
        overrides += ["model.hidden_size=32", "model.num_hidden_layers=1", "model.intermediate_size=64",
                      "model.tokenizer_vocab_size=300", "data.batch_size=4"]
    run = build_our_run(overrides, root / "run", root / "cache")
    hf_model, plain_model = copy.deepcopy(run.model.model), copy.deepcopy(run.model.model)
    ref: list[Any] = [None]
    ref[0] = trainer = hf_trainer(run, hf_model, alt.total_steps, str(root / "hf"))
    trainer.add_callback(_HFStepHook(ref, alt, 1))
    dm = run.datamodule
    train = dm.datasets["train"]
    check_one_epoch("B2", alt, train, dm.batch_size)
    loader = DataLoader(train, batch_size=dm.batch_size, sampler=same_order_sampler(train, dm.seed),
                        collate_fn=dm.collate_fn)
    # No saving, no evaluation, no reporting on our side either (the LR monitor only feeds loggers).
    extras = (pl.callbacks.ModelCheckpoint, pl.callbacks.EarlyStopping, pl.callbacks.LearningRateMonitor)
    alt.run([lambda i: _fit(run, alt, i, drop=extras, logger=False),
             lambda i: _train_hf(trainer, run),
             lambda i: plain_loop(plain_model, loader, run.model.hparams, alt.total_steps,
                                  run.cfg.trainer.gradient_clip_val, lambda loss: alt.step_done(i, loss),
                                  our_adamw_flags(run))], sizes.profile_to)
    _print_profiles(sizes, ["ours", "hf", "plain"])
    ours, hf, plain = (alt.median_time(i) * 1e3 / sizes.steps for i in range(3))
    parity = parity_text(max(alt.loss_diff(0, 1), alt.loss_diff(0, 2)), LOSS_TOL)
    return Result("B2", f"classification training, samples/s (classify_demo BERT, batch {dm.batch_size}, "
                        f"dynamic padding)",
                  f"{dm.batch_size / ours * 1e3:,.1f} samples/s",
                  f"{dm.batch_size / hf * 1e3:,.1f} samples/s (transformers Trainer)",
                  alt.ratio(0, 1), ">= 1.10 (min 1.0)", parity,
                  [f"round times (s): {alt.round_times(['ours', 'hf', 'plain'])}",
                   f"per step (medians): ours {ours:.1f} ms, Trainer {hf:.1f} ms, plain loop {plain:.1f} ms: the "
                   f"Trainer costs {hf - plain:+.1f} ms/step over no trainer at all, ours {ours - plain:+.1f} ms; "
                   f"ours/plain {alt.ratio(0, 2):.2f}, so a ratio to the Trainer above {alt.ratio(1, 2) ** -1:.2f} "
                   f"would need a loop faster than the plain one"])
