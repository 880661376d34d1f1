"""Chat SFT side by side with TRL's SFTTrainer: validation loss on assistant tokens and whole-process wall time,
same initial weights, tokenizer, chat template, data and hyper-parameters.

    python -m scripts.compare.sft_vs_trl                          # defaults below (a few minutes on 2 cores)
    python -m scripts.compare.sft_vs_trl --train 1200 --epochs 3 --hidden 128

The conversations are fresh ones (scripts/data/make_chat_data.py's generator with another seed, so neither side
has seen them), written under the work dir with a byte-level BPE tokenizer trained on them + the ChatML preset
(generation blocks: both sides train on the assistant turns with their end-of-turn token) and a small Llama with
random weights, saved once (`save_pretrained`); both sides start from that directory. Both: AdamW (betas 0.9/0.999,
eps 1e-8, weight decay off for biases and norms), linear decay after `int(warmup_ratio * steps)` warm-up steps,
clipping at 1.0, the same batch size, epochs and `max_length`, fp32 on CPU, no checkpoints. Data order and dropout
(off) aside, they compute the same thing.

Reported: each side's validation loss over all assistant tokens of the split, token-weighted (for TRL computed here
from its trained model on its own prepared validation set; its `eval_loss`, a mean of per-batch means, is shown
too), and the wall time of each whole process (imports, data preparation and tokenizer loading included), as the
ratio ours / TRL's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled"}

TRL_SIDE = r'''
import json, sys, torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
import trl

a = json.loads(sys.argv[1])
rows = lambda p: [json.loads(l) for l in open(p) if l.strip()]
tok = AutoTokenizer.from_pretrained(a["init"])
model = AutoModelForCausalLM.from_pretrained(a["init"])
args = trl.SFTConfig(output_dir=a["out"], report_to=[], use_cpu=True, bf16=False, seed=a["seed"],
                     assistant_only_loss=True, max_length=a["max_length"], per_device_train_batch_size=a["batch_size"],
                     per_device_eval_batch_size=2 * a["batch_size"], num_train_epochs=a["epochs"],
                     learning_rate=a["lr"], lr_scheduler_type="linear", warmup_steps=a["warmup_steps"],
                     weight_decay=a["weight_decay"], adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
                     max_grad_norm=1.0, eval_strategy="no", save_strategy="no", logging_steps=50,
                     dataloader_num_workers=0, dataset_num_proc=None)
trainer = trl.SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows(a["train"])),
                         eval_dataset=Dataset.from_list(rows(a["validation"])), processing_class=tok)
trainer.train()
eval_loss = trainer.evaluate()["eval_loss"]
model = trainer.model.eval()
nll, count = 0.0, 0
with torch.no_grad():
    for r in trainer.eval_dataset:
        ids, labels = torch.tensor([r["input_ids"]]), torch.tensor(r["labels"])
        logits = model(input_ids=ids).logits[0, :-1].float()
        nll += F.cross_entropy(logits, labels[1:], ignore_index=-100, reduction="sum").item()
        count += int((labels[1:] != -100).sum())
print("RESULT " + json.dumps({"val_loss": nll / count, "eval_loss": eval_loss, "tokens": count}))
'''


def prepare(work: Path, args: argparse.Namespace) -> dict[str, str]:
    """Fresh conversations, a tokenizer trained on them (+ ChatML) and a random small Llama, saved once."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lightning_llm.data import chat_templates
    from lightning_llm.data.tokenizers import train_tokenizer
    from scripts.data import make_chat_data

    rng = random.Random(args.data_seed)
    files = {}
    for split, n in (("train", args.train), ("validation", args.validation)):
        path = work / f"{split}.jsonl"
        path.write_text("".join(json.dumps(make_chat_data.conversation(rng)) + "\n" for _ in range(n)))
        files[split] = str(path)
    texts = [m["content"] for line in open(files["train"]) for m in json.loads(line)["messages"]]
    tokenizer = train_tokenizer(texts, "bpe", args.vocab, work / "tok")
    chat_templates.install_template(tokenizer, "chatml")
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=4,
        intermediate_size=3 * args.hidden, max_position_embeddings=256, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    init = work / "init"
    model.save_pretrained(str(init))
    tokenizer.save_pretrained(str(init))
    return {**files, "init": str(init)}


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, **OFFLINE})
    seconds = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"{cmd[:3]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=800)
    parser.add_argument("--validation", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--max_length", type=int, default=192)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--warmup_ratio", type=float, default=0.05)
    parser.add_argument("--weight_decay", type=float, default=0.01)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=600)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--data_seed", type=int, default=12345)
    parser.add_argument("--work_dir", type=Path, default=None)
    args = parser.parse_args()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="sft_vs_trl_"))
    work.mkdir(parents=True, exist_ok=True)
    paths = prepare(work, args)
    steps = -(-args.train // args.batch_size) * args.epochs
    warmup_steps = int(args.warmup_ratio * steps)

    ours_cmd = [str(Path(sys.executable).with_name("llm-train")), "model=gpt", "data=chat",
                f"model.pretrained_model_name_or_path={paths['init']}", f"data.train_file={paths['train']}",
                f"data.validation_file={paths['validation']}", f"data.max_length={args.max_length}",
                f"data.batch_size={args.batch_size}", f"data.eval_batch_size={2 * args.batch_size}",
                f"trainer.max_epochs={args.epochs}", f"model.learning_rate={args.lr}",
                f"model.warmup_ratio={args.warmup_ratio}", f"model.weight_decay={args.weight_decay}",
                "model.lr_scheduler=linear", "model.adam_betas=[0.9,0.999]", "model.dropout=0.0",
                "trainer.gradient_clip_val=1.0", "trainer.val_check_interval=1.0",
                f"trainer.check_val_every_n_epoch={args.epochs}", f"seed={args.seed}", "test=false", "export=false",
                "logger=none", "callbacks=none", f"paths.output_dir={work / 'ours'}"]
    ours_s, _ = timed(ours_cmd, work)
    ours = json.loads((work / "ours" / "results.json").read_text())["val"]

    trl_args = {"init": paths["init"], "train": paths["train"], "validation": paths["validation"],
                "out": str(work / "trl"), "seed": args.seed, "max_length": args.max_length,
                "batch_size": args.batch_size, "epochs": args.epochs, "lr": args.lr,
                "warmup_steps": warmup_steps, "weight_decay": args.weight_decay}
    (work / "trl_side.py").write_text(TRL_SIDE)
    trl_s, out = timed([sys.executable, str(work / "trl_side.py"), json.dumps(trl_args)], work)
    theirs = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])

    print(f"data: {args.train} train / {args.validation} validation fresh conversations; Llama hidden {args.hidden} "
          f"x{args.layers}, {args.epochs} epochs, batch {args.batch_size}, lr {args.lr:g}, {steps} steps")
    print(f"val loss on assistant tokens (token-weighted): ours {ours['val/loss']:.4f}  TRL {theirs['val_loss']:.4f}"
          f"  difference {ours['val/loss'] - theirs['val_loss']:+.4f}  (TRL eval_loss, per-batch mean: "
          f"{theirs['eval_loss']:.4f})")
    print(f"whole-process wall time: ours {ours_s:.1f} s  TRL {trl_s:.1f} s  ratio ours/TRL {ours_s / trl_s:.2f}")


if __name__ == "__main__":
    main()
