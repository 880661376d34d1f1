"""Throughput check: train a GPT-2-small-sized model (124M: 12 layers, 768 wide, 12 heads, 1024 context, vocab
padded to 50304) from scratch for a fixed number of steps and print tokens/s, MFU and peak memory.

The model, data, precision and strategy come from the project's own configs and builders (`model=gpt
data=text_corpus hardware=gpu|ddp`), so this measures what `llm-train` runs. `--tiny` runs the same logic on CPU
with a tiny model (what the tests use). With --devices 2 Lightning re-runs this script once per extra GPU (DDP);
rank 0 prints. Usually started through scripts/gpu_check.sh.

    python -m scripts.gpu.check                  # 1 GPU, bf16-mixed, 10 warm-up + 40 timed steps
    python -m scripts.gpu.check --devices 2      # DDP over 2 GPUs
    python -m scripts.gpu.check --tiny --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from lightning_llm.config import CONFIG_DIR, store  # noqa: F401  (store: registers the config schemas)
from lightning_llm.runtime import builders
from lightning_llm.runtime.hardware import check_hardware
from lightning_llm.utils.flops import (
    matmul_params,
    mfu,
    peak_flops,
    training_flops_per_token,
)

GPT2_SMALL = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
              "max_position_embeddings": 1024}
TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128,
        "max_position_embeddings": 64}


class StepTimer(pl.Callback):
    """Wall time of the optimizer steps after `warmup` (CUDA synchronised at the two ends only) and the tokens
    they processed on this rank."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.tokens = warmup, 0
        self.start: float | None = None
        self.seconds = 0.0

    def _now(self, trainer: pl.Trainer) -> float:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)
        return time.perf_counter()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.warmup and self.start is None:
            self.start = self._now(trainer)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.start is not None:
            self.tokens += int(batch["input_ids"].numel())

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if self.start is not None:
            self.seconds = self._now(trainer) - self.start


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model on CPU (checks the logic, not the GPU)")
    parser.add_argument("--devices", type=int, default=1, help="GPUs (or CPU processes with --tiny); >1 = DDP")
    parser.add_argument("--steps", type=int, default=40, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (allocator, kernels, compile)")
    parser.add_argument("--batch-size", type=int, default=None, help="sequences per device (default 16; 4 tiny)")
    parser.add_argument("--block-size", type=int, default=None, help="tokens per sequence (default 1024; 64 tiny)")
    parser.add_argument("--vocab-size", type=int, default=None, help="embedding rows (default 50304 = GPT-2 "
                        "padded to a multiple of 64; tiny: the tokenizer's)")
    parser.add_argument("--precision", default=None, help="Lightning precision (default bf16-mixed; 32-true tiny)")
    parser.add_argument("--compile", action="store_true", help="model.compile=true (adds compile time to warm-up)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak TFLOP/s per device for MFU when "
                        "the GPU is not in lightning_llm/utils/flops.py")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file (rank 0)")
    args = parser.parse_args(argv)
    args.batch_size = args.batch_size or (4 if args.tiny else 16)
    args.block_size = args.block_size or (64 if args.tiny else 1024)
    args.precision = args.precision or ("32-true" if args.tiny else "bf16-mixed")
    return args


def repeated_corpus(cache_dir: str, times: int) -> Path:
    """The bundled training stories `times` over (119 blocks of 1024 tokens once: too few for steady full
    batches). Same path and content on every rank, so the tokenized cache is shared."""
    path = Path(cache_dir).expanduser() / "gpu_check" / f"corpus_train_x{times}.txt"
    if not path.is_file():
        text = (Path(builders.__file__).parent / "data" / "bundled" / "corpus_train.txt").read_text()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text * times)
        tmp.replace(path)
    return path


def compose_config(args: argparse.Namespace, output_dir: str, overrides: list[str] = ()) -> Any:
    size = TINY if args.tiny else GPT2_SMALL
    hardware = "cpu" if args.tiny else "gpu"
    overrides = [
        "model=gpt", "data=text_corpus", f"hardware={hardware}", f"hardware.devices={args.devices}",
        f"hardware.strategy={'ddp' if args.devices > 1 else 'auto'}", f"hardware.precision={args.precision}",
        *(f"model.{k}={v}" for k, v in size.items()), "model.dropout=0.0", "model.tokenizer_vocab_size=8000",
        f"model.compile={str(args.compile).lower()}",
        f"model.gradient_checkpointing={str(args.gradient_checkpointing).lower()}",
        f"data.block_size={args.block_size}", f"data.batch_size={args.batch_size}",
        f"trainer.max_steps={args.warmup + args.steps}", "trainer.max_epochs=-1", "trainer.log_every_n_steps=1000",
        "+trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0", "+trainer.enable_progress_bar=false",
        "+trainer.enable_model_summary=false", "logger=none", "callbacks=none", f"paths.output_dir={output_dir}",
        "task_name=gpu_check", *overrides,
    ]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def run(args: argparse.Namespace) -> dict[str, Any] | None:
    """Train and measure; the figures on rank 0, None on the other ranks."""
    cfg = compose_config(args, tempfile.mkdtemp(prefix="gpu_check_"))
    if not args.tiny:
        corpus = repeated_corpus(cfg.paths.cache_dir, times=10)
        cfg = compose_config(args, cfg.paths.output_dir, [f"data.train_file={corpus}"])
    check_hardware(cfg.hardware, multirun=False)
    pl.seed_everything(0, workers=True)
    datamodule = builders.build_datamodule(cfg)
    datamodule.tokenizer = builders.build_tokenizer(cfg, datamodule)
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = builders.build_model(cfg, datamodule.tokenizer, datamodule)
    vocab = args.vocab_size or (None if args.tiny else 50304)
    if vocab:  # GPT-2's 50257 tokens (padded): the output layer costs what it costs in the real model
        module.model.resize_token_embeddings(vocab)
    timer = StepTimer(args.warmup)
    trainer = builders.build_trainer(cfg, [], [timer])
    trainer.fit(module, datamodule=datamodule)

    if trainer.global_step < args.warmup + args.steps or timer.seconds <= 0:
        raise SystemExit(f"gpu_check: only {trainer.global_step} steps ran (corpus too small for the batch?)")
    tokens = trainer.strategy.reduce(torch.tensor(float(timer.tokens), device=module.device), reduce_op="sum")
    device = trainer.strategy.root_device
    peak_mem = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    if not trainer.is_global_zero:
        return None
    tokens_per_sec = float(tokens) / timer.seconds
    config = module.model.config
    per_token = training_flops_per_token(matmul_params(module.model), config.num_hidden_layers,
                                         config.hidden_size, args.block_size)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_flops(device, args.precision)
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "devices": trainer.world_size, "precision": args.precision,
        "params": sum(p.numel() for p in module.model.parameters()),
        "batch": [args.batch_size, args.block_size], "timed_steps": args.steps, "seconds": timer.seconds,
        "tokens_per_sec": tokens_per_sec, "tokens_per_sec_per_device": tokens_per_sec / trainer.world_size,
        "flops_per_token": per_token, "peak_flops_per_device": peak,
        "mfu": mfu(tokens_per_sec, per_token, peak, trainer.world_size) if peak else None,
        "peak_memory_gib": peak_mem / 2**30, "peak_memory_kind": "cuda allocated" if device.type == "cuda"
        else "host max RSS",
    }


def report(figures: dict[str, Any]) -> str:
    mfu_text = (f"{100 * figures['mfu']:.1f}% (peak {figures['peak_flops_per_device'] / 1e12:.0f} TFLOP/s per "
                f"device, {figures['flops_per_token'] / 1e9:.2f} GFLOP/token)" if figures["mfu"] is not None
                else "n/a (device not in lightning_llm/utils/flops.py; pass --peak-tflops)")
    return "\n".join([
        f"gpu_check: {figures['device']} x{figures['devices']}, {figures['precision']}, "
        f"{figures['params'] / 1e6:.1f}M params, batch {figures['batch'][0]}x{figures['batch'][1]} per device, "
        f"{figures['timed_steps']} timed steps in {figures['seconds']:.1f} s",
        f"tokens/s: {figures['tokens_per_sec']:,.0f} ({figures['tokens_per_sec_per_device']:,.0f} per device)",
        f"MFU: {mfu_text}",
        f"peak memory: {figures['peak_memory_gib']:.2f} GiB ({figures['peak_memory_kind']}, rank 0)",
    ])


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    figures = run(args)
    if figures is not None:
        print(report(figures), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
