"""Chat SFT throughput, packed (`data.packing=true`) vs padded rows: tokens per second of training steps.

    python -m scripts.bench.chat_packing                                   # bundled demo conversations, CPU
    python -m scripts.bench.chat_packing --device cuda --dtype bfloat16 --hidden 512 --layers 8 --steps 30

Both sides encode the same conversations with `ChatDataModule` (ChatML, a byte-level BPE trained on them) and train
the same Llama (AdamW, fused where available) with the same number of conversation tokens per step: padded batches
of `--batch_size` conversations (padded to the longest, attention mask), and packed rows of `--max_length` tokens
(best-fit decreasing, position ids restarting, no attention mask: transformers masks attention block-diagonally)
holding about as many tokens. Reported: real (non-pad) tokens per second over `--steps` timed steps after
`--warmup` untimed ones, the padding share of each, peak GPU memory on CUDA, and the ratio packed / padded.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lightning_llm.data.tokenizers import train_tokenizer
from lightning_llm.tasks.chat import ChatDataModule

BUNDLED = Path(__file__).resolve().parents[2] / "lightning_llm" / "data" / "bundled" / "chat_train.jsonl"


def batches(args: argparse.Namespace, packing: bool, tokenizer: object,
            work: Path) -> list[tuple[dict[str, torch.Tensor], int]]:
    """(collated batch, its real token count) per training step."""
    dm = ChatDataModule(tokenizer=tokenizer, train_file=str(args.file), validation_file=str(args.file),
                        chat_template="chatml", test_file=None, cache_dir=str(work / "cache"), max_length=args.max_length, packing=packing,
                        batch_size=args.batch_size, pad_to_multiple_of=8 if args.device == "cuda" else None)
    dm.prepare_data()
    dm.setup("fit")
    rows = dm.datasets["train"]
    if packing:  # as many real tokens per step as a padded batch holds on average
        mean = sum(len(r) for r in rows["input_ids"]) / len(rows)
        per_step = max(1, round(args.batch_size * args.mean_conversation / mean)) if args.mean_conversation else 1
    else:
        per_step = args.batch_size
    out = []
    for i in range(0, len(rows) - per_step + 1, per_step):
        group = [rows[j] for j in range(i, i + per_step)]
        out.append((dm.collate_fn(group), sum(len(r["input_ids"]) for r in group)))
    return out


def run(args: argparse.Namespace, data: list[tuple[dict[str, torch.Tensor], int]], vocab: int) -> dict[str, float]:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
                         num_attention_heads=max(1, args.hidden // 64), intermediate_size=args.hidden * 3,
                         max_position_embeddings=max(512, args.max_length))
    config._attn_implementation = args.attn
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    model = LlamaForCausalLM(config).to(device=args.device, dtype=dtype).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=args.device in ("cuda", "cpu"))
    real = pad = 0
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(args.warmup + args.steps):
        cpu_batch, used = data[step % len(data)]
        batch = {k: v.to(args.device) for k, v in cpu_batch.items()}
        if step == args.warmup:
            if args.device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        loss = model(**batch, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= args.warmup:
            real, pad = real + used, pad + batch["input_ids"].numel() - used
    if args.device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    out = {"tokens_per_s": real / seconds, "pad_share": pad / max(1, real + pad), "seconds": seconds}
    if args.device == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=BUNDLED)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--attn", default="sdpa", help="sdpa, eager, flash_attention_2 (if installed)")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--max_length", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="chat_packing_"))
    texts = [m["content"] for line in open(args.file) for m in json.loads(line)["messages"]]
    tokenizer = train_tokenizer(texts, "bpe", 600, work / "tok")
    tokenizer.pad_token = tokenizer.eos_token
    padded = batches(argparse.Namespace(**{**vars(args), "mean_conversation": None}), False, tokenizer, work)
    mean = sum(used for _, used in padded) / sum(len(b["input_ids"]) for b, _ in padded)
    packed = batches(argparse.Namespace(**{**vars(args), "mean_conversation": mean}), True, tokenizer, work)
    results = {name: run(args, data, len(tokenizer)) for name, data in (("padded", padded), ("packed", packed))}
    device = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"{device}, {args.dtype}, attn {args.attn}, Llama hidden {args.hidden} x{args.layers}, batch "
          f"{args.batch_size} conversations (packed: rows of {args.max_length} with as many tokens), {args.steps} steps")
    for name, r in results.items():
        memory = f", peak {r['peak_memory_gib']:.2f} GiB" if "peak_memory_gib" in r else ""
        print(f"  {name}: {r['tokens_per_s']:,.0f} tokens/s, padding {r['pad_share']:.1%}{memory}")
    print(f"packed / padded tokens/s: {results['packed']['tokens_per_s'] / results['padded']['tokens_per_s']:.2f}")


if __name__ == "__main__":
    main()
