"""B5: generation tokens/s, our `generate_ids` vs transformers' `generate`, KV cache on vs off.

The measurement itself is `scripts/bench_generation.py` (the generation engineer's, run on its own with more
options); this wraps its `run()` into the summary table, with sizes that keep `benchmark.py all` short.
"""

from __future__ import annotations

import bench_generation

from bench.harness import Result

# Shorter than bench_generation's defaults (256 new tokens, 5 rounds): same model, same comparison.
_ALL_SIZES = ["--new-tokens", "128", "--rounds", "3"]


def b5(smoke: bool = False, rounds: int | None = None) -> list[Result]:
    argv = ["--smoke"] if smoke else list(_ALL_SIZES)
    if rounds and not smoke:
        argv += ["--rounds", str(rounds)]
    result = bench_generation.run(bench_generation.parse_args(argv))
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
