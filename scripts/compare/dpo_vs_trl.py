"""DPO side by side with TRL's DPOTrainer: the same starting weights, pairs and settings (AdamW, learning rate,
linear decay without warmup, no weight decay, clipping at 1.0, beta, max_length, batch size, steps, seed, dropout off),
each as its own process on this machine. Prints both validation reward accuracies (ours over the whole split; TRL's
a mean of per-batch means, equal when the eval batch divides the split) and the whole-process wall-time ratio.

    python -m scripts.compare.dpo_vs_trl --model <sft_demo run>/hf_model [--train F --validation F] [--steps 40]

Defaults: the bundled demo pairs (lightning_llm/data/bundled/preference_*.jsonl).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUNDLED = Path(__file__).resolve().parents[2] / "lightning_llm" / "data" / "bundled"


def trl_side(args: argparse.Namespace) -> None:
    """Runs in its own process: DPOTrainer train + evaluate, the accuracy printed as JSON on the last line."""
    import trl
    from datasets import load_dataset
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.model)
    data = load_dataset("json", data_files={"train": args.train, "validation": args.validation})
    config = trl.DPOConfig(output_dir=args.out, report_to=[], use_cpu=True, bf16=False, seed=args.seed,
                           per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=2 * args.batch_size,
                           learning_rate=args.lr, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0,
                           max_grad_norm=1.0, max_steps=args.steps, beta=args.beta, max_length=args.max_length,
                           save_strategy="no", eval_strategy="no", logging_steps=10, dataloader_num_workers=0,
                           disable_dropout=True)
    trainer = trl.DPOTrainer(model=args.model, args=config, train_dataset=data["train"],
                             eval_dataset=data["validation"], processing_class=tok)
    trainer.train()
    metrics = trainer.evaluate()
    print(json.dumps({"val/rewards/accuracies": metrics["eval_rewards/accuracies"],
                      "val/rewards/margins": metrics["eval_rewards/margins"], "val/loss": metrics["eval_loss"]}))


def timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{' '.join(command[:3])} failed:\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="starting causal LM (HF directory with its tokenizer)")
    parser.add_argument("--train", default=str(BUNDLED / "preference_train.jsonl"))
    parser.add_argument("--validation", default=str(BUNDLED / "preference_validation.jsonl"))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--max-length", type=int, default=192)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default=None)
    parser.add_argument("--side", choices=["both", "trl"], default="both")
    args = parser.parse_args()
    if args.side == "trl":
        trl_side(args)
        return
    out = Path(args.out or tempfile.mkdtemp(prefix="dpo_vs_trl_"))
    env = {**os.environ, "TQDM_DISABLE": "1"}
    ours_cmd = ["llm-train", "model=dpo", "data=preference", f"model.pretrained_model_name_or_path={args.model}",
                f"data.train_file={args.train}", f"data.validation_file={args.validation}", "test=false",
                "export=false", "logger=none", "callbacks=none", f"trainer.max_steps={args.steps}",
                f"data.batch_size={args.batch_size}", f"model.learning_rate={args.lr}", f"model.beta={args.beta}",
                f"data.max_length={args.max_length}", "trainer.max_epochs=-1", f"seed={args.seed}",
                f"paths.output_dir={out / 'ours'}", f"data.cache_dir={out / 'cache'}"]
    trl_cmd = [sys.executable, "-m", "scripts.compare.dpo_vs_trl", "--side", "trl", "--model", args.model, "--train", args.train,
               "--validation", args.validation, "--steps", str(args.steps), "--batch-size", str(args.batch_size),
               "--lr", str(args.lr), "--beta", str(args.beta), "--max-length", str(args.max_length),
               "--seed", str(args.seed), "--out", str(out / "trl")]
    ours_s, _ = timed(ours_cmd, env)
    ours = json.loads((out / "ours" / "results.json").read_text())
    trl_s, stdout = timed(trl_cmd, env)
    theirs = json.loads(stdout.strip().splitlines()[-1])
    ours_acc = ours["val"]["val/rewards/accuracies"]
    print(f"val/rewards/accuracies: ours {ours_acc:.4f}, TRL {theirs['val/rewards/accuracies']:.4f} "
          f"(difference {ours_acc - theirs['val/rewards/accuracies']:+.4f})")
    print(f"val/loss: ours {ours['val']['val/loss']:.4f}, TRL {theirs['val/loss']:.4f}")
    print(f"whole-process wall time: ours {ours_s:.1f} s, TRL {trl_s:.1f} s, ratio {ours_s / trl_s:.2f}x")


if __name__ == "__main__":
    main()
