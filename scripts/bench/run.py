"""Side-by-side benchmarks of lightning-llm against the simplest alternatives; prints a markdown table of ratios.

    python -m scripts.bench.run all            # B1..B5, offline, < 10 minutes on 2 CPU cores
    python -m scripts.bench.run b1 b3          # some of them
    python -m scripts.bench.run all --smoke    # tiny sizes, one round: checks the code, not the speed
    python -m scripts.bench.run b6 b7 b8       # the whole process at real shapes, < 10 minutes on 2 CPU cores

(from the root of a clone: `scripts` is not installed with the package)

Each benchmark runs both sides in this one process with identical weights, data and optimizer, alternates timed
rounds A B A B after a warm-up, checks that the losses (or outputs) agree before any speed figure is trusted, and
reports the median over round pairs of baseline time / our time (> 1: we are faster).

  B1  causal-LM training: llm-train's path (Trainer + CausalLMModule + collator + default callbacks + CSV logger)
      vs a minimal PyTorch loop                                                        goal >= 0.97
  B2  classification training vs transformers' Trainer (same tiny BERT, batches, dynamic padding)  goal >= 1.10
  B3  data preparation (tokenize + pack, cold cache) vs batched fast-tokenizer calls + numpy  goal >= 0.8;
      the same preparation served from the cache vs cold                                goal >= 10x
  B4  non-padding share of batches: packed CLM/MLM (goal >= 0.99); dynamic vs max-length padding (speed-up)
  B5  generation tokens/s vs transformers' generate (goal >= 0.95); KV cache on vs off
  B6  the whole llm-train process vs a transformers Trainer script doing the same work (train, evaluate each
      epoch, keep the best checkpoint, test it, save) at the MiniLM-L6 shape, A B B A in fresh processes after
      an untimed run; per-phase and per-step ratios (goal >= 1.11, min 1.0): classification
  B7  the same for masked LM (MiniLM-L6 shape, DataCollatorForLanguageModeling on the Trainer side)
  B8  the same for causal LM (GPT-2-shaped 6x512 decoder, 16k vocabulary)
      B6-B8 are not in `all` (~3 minutes each on 2 cores; scripts/bench/real_shape.py); --group-by-length and
      --compile turn those options on for both sides
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from scripts.bench.harness import Result, markdown_table, offline_env, set_workdir_root

offline_env()  # before transformers/datasets/tokenizers are imported

BENCHMARKS = ("b1", "b2", "b3", "b4", "b5")
REAL_SHAPE = ("b6", "b7", "b8")  # not in `all`: fresh processes at real model sizes, minutes each


def machine() -> str:
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.exists() else []
    cpu = names[0] if names else platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores visible, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"{gpu}; load average at start {load:.2f}")


def run(name: str, smoke: bool, rounds: int | None, overrides: list[str], profile_to: Path | None,
        options: list[str], train_rows: int | None = None) -> list[Result]:
    if name in ("b1", "b2"):
        from scripts.bench import training

        # Many short rounds (the median over round pairs is what survives other work on a shared machine), all
        # within the first epoch: B1 has 119 batches, B2 94.
        sizes = (training.Sizes(warmup=1, steps=2, rounds=1) if smoke else
                 training.Sizes(warmup=5, steps=8, rounds=14 if name == "b1" else 11))
        if rounds:
            sizes.rounds = rounds
        sizes.overrides = tuple(overrides)
        sizes.profile_to = profile_to and profile_to / name
        return [getattr(training, name)(sizes, smoke=smoke)]
    if name in REAL_SHAPE:
        from scripts.bench import real_shape

        return real_shape.run(name, smoke=smoke, pairs=rounds, overrides=overrides, options=options,
                              train_rows=train_rows)
    if name in ("b3", "b4"):
        from scripts.bench import data

        return getattr(data, name)(smoke=smoke, rounds=rounds)
    from scripts.bench import generation

    return generation.b5(smoke=smoke, rounds=rounds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="+", choices=[*BENCHMARKS, *REAL_SHAPE, "all"], help="benchmarks to run")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and one round (tests the code only)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="timed rounds per side (default per benchmark; B6-B8: process pairs, default 2)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="extra llm-train override for our side of B1/B2/B6-B8 (repeatable), e.g. to bisect "
                             "overheads")
    parser.add_argument("--group-by-length", action="store_true",
                        help="B6-B8: length-grouped training batches on both sides (data.group_by_length, the "
                             "Trainer's group_by_length)")
    parser.add_argument("--compile", action="store_true",
                        help="B6-B8: torch.compile on both sides (model.compile, the Trainer's torch_compile)")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="B1/B2: cProfile each side's timed rounds (CPU time of its thread) into "
                             "DIR/<b1|b2>-<side>.prof and print a per-step summary (ratios under profiling are "
                             "not representative)")
    parser.add_argument("--train-rows", type=int, default=None, metavar="N",
                        help="B6: training rows (default 768, ~15 s a side; all 3000: a real epoch of 94 steps)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    names = BENCHMARKS if "all" in args.which else tuple(dict.fromkeys(args.which))
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)

    print(f"machine: {machine()}", flush=True)
    results: list[Result] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lightning-llm-bench-") as tmp:
        set_workdir_root(Path(tmp))
        for name in names:
            t0 = time.perf_counter()
            options = [o for o in ("group_by_length", "compile") if getattr(args, o)]
            for result in run(name, args.smoke, args.rounds, args.override, args.profile, options, args.train_rows):
                results.append(result)
                print(f"{result.name}: ratio {result.ratio if result.ratio is None else round(result.ratio, 3)} "
                      f"({result.ours} vs {result.baseline}); parity {result.parity}", flush=True)
                for note in result.notes:
                    print(f"  {note}", flush=True)
            print(f"{name} took {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"\n{markdown_table(results)}\n")
    print(f"total {time.perf_counter() - started:.0f} s; load average at end {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=2))
    mismatched = [r.name for r in results if "MISMATCH" in r.parity]
    if mismatched:
        print(f"parity check failed for {', '.join(mismatched)}: their speed figures are not comparable")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
