"""B5: generation speed, our generate path (`lightning_llm.modules.generation.generate_ids`) vs calling
transformers' `model.generate` directly, and our path with the KV cache on vs off, side by side in one process.

    python -m scripts.bench.generation            # 4 layers x 256 wide, 512 context, 256 new tokens (~1-2 min, 2 cores)
    python -m scripts.bench.generation --smoke    # tiny and one round: checks the code, not the speed

A small GPT-2 is built from scratch (random weights, no EOS, so every call generates exactly `new_tokens` tokens
per row). After one untimed warm-up call per side, timed rounds alternate the sides (A B C, then C B A, ...) so
background load hits all of them alike; greedy outputs must be token-identical across the sides before any speed
is reported. Ratios are medians over rounds of per-round ratios. Goals: ours / HF >= 0.95, cache on / off >= 3x.
`run(args) -> dict` measures; `b5()` wraps it into the summary table of `python -m scripts.bench.run`, with sizes
that keep `all` short.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, GenerationConfig, GPT2Config  # noqa: E402

from lightning_llm.modules.generation import generate_ids  # noqa: E402
from scripts.bench.harness import Result  # noqa: E402

GOALS = {"ours_vs_hf": 0.95, "cache_on_vs_off": 3.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--batch-size", type=int, default=1, help="prompts per generate call")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per side")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    # One CPU thread by default: on a shared 2-core machine under background load, 2 OpenMP threads made the same
    # 256-token call take 6-94 s from round to round (measured), 1 thread 1.0-1.4 s. Both sides use the setting.
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one round")
    parser.add_argument("--json", default=None, help="also write the result dict here")
    return parser.parse_args(argv)


def _smoke(args: argparse.Namespace) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "layers": 1, "width": 32, "heads": 2, "context": 64, "vocab": 300,
                                 "batch_size": 2, "prompt_tokens": 8, "new_tokens": 16, "rounds": 1})


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_rounds(sides: dict[str, Callable[[], list[list[int]]]], rounds: int,
                  device: torch.device) -> tuple[dict[str, list[float]], dict[str, list[list[int]]]]:
    """One untimed warm-up call per side, then `rounds` rounds in alternating order; times and last outputs."""
    names = list(sides)
    outputs = {name: sides[name]() for name in names}
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            _sync(device)
            start = time.perf_counter()
            outputs[name] = sides[name]()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return times, outputs


def _median_ratio(slow: list[float], fast: list[float]) -> float:
    return statistics.median(s / f for s, f in zip(slow, fast))


def run(args: argparse.Namespace | None = None) -> dict[str, Any]:
    """Measure and return tokens/s per side, median ratios, goals and whether outputs were token-identical."""
    args = args or parse_args([])
    if args.smoke:
        args = _smoke(args)
    if args.threads and args.device == "cpu":
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    config = GPT2Config(n_layer=args.layers, n_embd=args.width, n_head=args.heads, n_inner=4 * args.width,
                        n_positions=args.context, vocab_size=args.vocab, bos_token_id=None, eos_token_id=None)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").to(device).eval()
    prompts = torch.randint(0, args.vocab, (args.batch_size, args.prompt_tokens)).tolist()
    cached = GenerationConfig(max_new_tokens=args.new_tokens, do_sample=False, num_beams=1, use_cache=True,
                              pad_token_id=0, eos_token_id=None)
    uncached = GenerationConfig(**{**cached.to_diff_dict(), "use_cache": False})

    def hf_direct(generation_config: GenerationConfig) -> list[list[int]]:
        input_ids = torch.tensor(prompts, device=device)
        with torch.inference_mode():
            out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                 generation_config=generation_config)
        return out[:, args.prompt_tokens:].tolist()

    def ours(generation_config: GenerationConfig) -> list[list[int]]:
        per_prompt = generate_ids(model, prompts, generation_config, batch_size=args.batch_size)
        return [seqs[0] for seqs in per_prompt]

    times, outputs = _timed_rounds({"ours": lambda: ours(cached), "hf": lambda: hf_direct(cached),
                                    "ours_no_cache": lambda: ours(uncached)}, args.rounds, device)
    identical = all(outputs[name] == outputs["hf"] for name in outputs)
    lengths_ok = all(len(row) == args.new_tokens for row in outputs["hf"])
    tokens = args.batch_size * args.new_tokens
    result: dict[str, Any] = {
        "benchmark": "B5 generation",
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "torch_threads": torch.get_num_threads(),
        "tokens_per_s": {name: tokens / statistics.median(t) for name, t in times.items()},
        "round_times_s": times,
        "token_identical": identical and lengths_ok,
        "goals": GOALS,
    }
    # Speed figures only when the sides did the same work.
    trusted = identical and lengths_ok
    result["ours_vs_hf"] = _median_ratio(times["hf"], times["ours"]) if trusted else None
    result["cache_on_vs_off"] = _median_ratio(times["ours_no_cache"], times["ours"]) if trusted else None
    return result


def _report(result: dict[str, Any]) -> str:
    s, tps = result["settings"], result["tokens_per_s"]
    lines = [f"GPT-2 {s['layers']} layers x {s['width']} wide, context {s['context']}, batch {s['batch_size']}, "
             f"{s['prompt_tokens']} prompt + {s['new_tokens']} new tokens, {s['device']}, "
             f"{result['torch_threads']} threads, {s['rounds']} rounds; token-identical outputs: "
             f"{result['token_identical']}",
             "| side | tokens/s (median) |", "|---|---|"]
    lines += [f"| {name} | {value:.1f} |" for name, value in tps.items()]
    for key, goal in GOALS.items():
        ratio = result[key]
        verdict = "n/a (outputs differ)" if ratio is None else f"{ratio:.2f} ({'meets' if ratio >= goal else 'BELOW'} "\
                                                                f"goal >= {goal})"
        lines.append(f"{key}: {verdict}")
    return "\n".join(lines)


# Shorter than the defaults above (256 new tokens, 5 rounds) for `run.py all`: same model, same comparison.
_ALL_SIZES = ["--new-tokens", "128", "--rounds", "3"]


def b5(smoke: bool = False, rounds: int | None = None) -> list[Result]:
    """B5 and B5-cache as rows of the summary table."""
    argv = ["--smoke"] if smoke else list(_ALL_SIZES)
    if rounds and not smoke:
        argv += ["--rounds", str(rounds)]
    result = run(parse_args(argv))
    s, tps = result["settings"], result["tokens_per_s"]
    parity = "ok (greedy outputs token-identical)" if result["token_identical"] else "MISMATCH (outputs differ)"
    what = (f"generation tokens/s (GPT-2 {s['layers']}x{s['width']}, batch {s['batch_size']}, "
            f"{s['prompt_tokens']}+{s['new_tokens']} tokens, greedy)")
    notes = ["round times (s): " + "; ".join(f"{k} " + " ".join(f"{t:.2f}" for t in v)
                                               for k, v in result["round_times_s"].items())]
    return [Result("B5", what, f"{tps['ours']:,.0f} tok/s", f"{tps['hf']:,.0f} tok/s (model.generate)",
                   result["ours_vs_hf"], ">= 0.95", parity, notes),
            Result("B5-cache", "our generation, KV cache on vs off", f"{tps['ours']:,.0f} tok/s (cache on)",
                   f"{tps['ours_no_cache']:,.0f} tok/s (cache off)", result["cache_on_vs_off"], ">= 3x", parity)]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    print(_report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0 if result["token_identical"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
