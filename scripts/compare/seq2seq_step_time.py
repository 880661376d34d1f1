"""Training-step time of the from-scratch seq2seq architectures our builders make at one size (T5 vs BART vs
Marian): the same generic size fields, vocabulary, batch shapes and AdamW; rounds alternate between the
architectures and the median per step is reported, with the ratio to T5. Also times `generate` on one batch.

    python -m scripts.compare.seq2seq_step_time                        # d_model 128, 2+2 layers, batch 32
    python -m scripts.compare.seq2seq_step_time --hidden-size 256 --steps 10 --rounds 5
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from lightning_llm.tasks.seq2seq import Seq2SeqModule  # noqa: E402

SPECIAL = {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2}


def build(model_type: str, args: argparse.Namespace) -> Seq2SeqModule:
    torch.manual_seed(0)
    return Seq2SeqModule(model_type=model_type, hidden_size=args.hidden_size, num_hidden_layers=args.layers,
                         num_attention_heads=args.heads, intermediate_size=args.ffn, vocab_size=args.vocab,
                         special_token_ids=SPECIAL, generation_max_new_tokens=args.target_len)


def batch(args: argparse.Namespace) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    source = torch.randint(3, args.vocab, (args.batch_size, args.source_len), generator=g)
    labels = torch.randint(3, args.vocab, (args.batch_size, args.target_len), generator=g)
    source[:, -1], labels[:, -1] = 1, 1
    return {"input_ids": source, "attention_mask": torch.ones_like(source), "labels": labels}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--types", nargs="+", default=["t5", "bart", "marian"])
    p.add_argument("--hidden-size", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--ffn", type=int, default=256)
    p.add_argument("--vocab", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--source-len", type=int, default=16)
    p.add_argument("--target-len", type=int, default=16)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    data = batch(args)
    models = {t: build(t, args) for t in args.types}
    optimizers = {t: torch.optim.AdamW(m.parameters(), lr=1e-3, fused=True) for t, m in models.items()}
    per_step: dict[str, list[float]] = {t: [] for t in args.types}

    def step(t: str) -> None:
        loss = models[t].model(**data).loss
        loss.backward()
        optimizers[t].step()
        optimizers[t].zero_grad(set_to_none=True)

    for t in args.types:  # warm-up
        step(t)
    for r in range(args.rounds):
        for t in args.types if r % 2 == 0 else list(reversed(args.types)):
            start = time.perf_counter()
            for _ in range(args.steps):
                step(t)
            per_step[t].append((time.perf_counter() - start) / args.steps)
    print(f"d_model {args.hidden_size}, {args.layers}+{args.layers} layers, {args.heads} heads, ffn {args.ffn}, "
          f"vocab {args.vocab}, batch {args.batch_size} x {args.source_len}->{args.target_len} tokens, "
          f"torch threads {torch.get_num_threads()}")
    print("| model | parameters | train step ms (median) | vs t5 | generate ms (1 batch, greedy) |")
    print("|---|---|---|---|---|")
    base = statistics.median(per_step[args.types[0]])
    for t, m in models.items():
        m.model.eval()
        config = copy.deepcopy(m.model.generation_config)
        config.min_new_tokens = args.target_len  # same length for all: untrained models stop at random points
        with torch.no_grad():
            start = time.perf_counter()
            m.model.generate(input_ids=data["input_ids"], attention_mask=data["attention_mask"],
                             generation_config=config)
            gen = time.perf_counter() - start
        ms = statistics.median(per_step[t])
        params = sum(p.numel() for p in m.parameters())
        print(f"| {t} | {params / 1e3:,.0f} K | {ms * 1e3:.1f} | {ms / base:.2f}x | {gen * 1e3:.0f} |")
    print("(a shared, noisy machine: rounds alternate; compare medians, not single rounds)")


if __name__ == "__main__":
    main()
