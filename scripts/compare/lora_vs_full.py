"""LoRA vs full fine-tuning from the same pretrained encoder: one masked-LM run on the bundled review texts (as in
scripts/compare/pretrain_then_finetune.py), then experiment=pretrain_then_finetune from its export, once with every
parameter training (the experiment's learning rate, 1e-3) and once with `peft=lora` and its defaults (learning rate
3e-3, adapters on the attention projections and the token embeddings), per seed. Prints test accuracy, the LoRA run's
trainable share and learning rate, wall time per run and whether the merged LoRA export reloads (plain
`from_pretrained`) with the LoRA checkpoint's logits.

    python -m scripts.compare.lora_vs_full
    python -m scripts.compare.lora_vs_full --mlm outputs/lora_vs_full/mlm_reviews/hf_model --seeds 1 2 3
    python -m scripts.compare.lora_vs_full --lora model.peft.target_modules=[Wqkv] model.learning_rate=5e-3

Wall times include each command's start-up (~15 s here) and are noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

BUNDLED = Path(__file__).resolve().parents[2] / "lightning_llm" / "data" / "bundled"
MLM = ["experiment=mlm_demo", "task_name=mlm_reviews", "model.tokenizer_vocab_size=4000", "trainer.max_epochs=20",
       *[f"data.{split}_file={BUNDLED / f'reviews_{split}.csv'}" for split in ("train", "validation", "test")]]


def llm_train(run_dir: Path, *overrides: str) -> tuple[dict, float, str]:
    command = [sys.executable, "-m", "lightning_llm.train", *overrides, f"paths.output_dir={run_dir}",
               "callbacks.rich_progress_bar=null"]
    print("$", shlex.join(["llm-train", *command[3:]]), flush=True)
    start = time.perf_counter()
    proc = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads((run_dir / "results.json").read_text()), time.perf_counter() - start, proc.stdout


def merged_export_matches(run: dict) -> float:
    """Largest |logit difference| between the run's hf_model (plain transformers) and its LoRA checkpoint."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from lightning_llm.runtime.checkpoints import load_module

    module = load_module(run["best_checkpoint"])
    plain = AutoModelForSequenceClassification.from_pretrained(run["hf_model"]).eval()
    ids = torch.randint(5, 200, (8, 32))
    with torch.no_grad():
        return float((plain(input_ids=ids).logits - module(input_ids=ids).logits).abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mlm", type=Path, default=None, help="a pretrained encoder's HF dir (default: pretrain)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--common", nargs="*", default=[], help="extra overrides for both fine-tuning runs")
    parser.add_argument("--lora", nargs="*", default=[], help="extra overrides for the LoRA runs")
    parser.add_argument("--out", type=Path, default=Path("outputs/lora_vs_full"))
    args = parser.parse_args()

    encoder = args.mlm
    if encoder is None:
        mlm, seconds, _ = llm_train(args.out / "mlm_reviews", *MLM)
        encoder = Path(mlm["hf_model"])
        print(f"MLM: val/mlm_acc {mlm['val']['val/mlm_acc']:.4f} in {seconds:.0f} s")
    rows = []
    for seed in args.seeds:
        common = ["experiment=pretrain_then_finetune", f"model.pretrained_model_name_or_path={encoder.resolve()}",
                  f"seed={seed}", *args.common]
        full, full_s, _ = llm_train(args.out / f"full_seed{seed}", *common)
        lora, lora_s, stdout = llm_train(args.out / f"lora_seed{seed}", *common, "peft=lora", *args.lora)
        share = next(line for line in stdout.splitlines() if line.startswith("LoRA "))
        diff = merged_export_matches(lora)
        rows.append((full["test"]["test/acc"], lora["test"]["test/acc"], full_s, lora_s))
        print(f"seed {seed}: test/acc full {rows[-1][0]:.4f} ({full_s:.0f} s)  LoRA {rows[-1][1]:.4f} ({lora_s:.0f} s)"
              f" | {share} | merged export max |logit diff| {diff:.1e}", flush=True)
    means = [statistics.mean(col) for col in zip(*rows)]
    print(f"mean over {len(rows)} seeds: test/acc full {means[0]:.4f} ({means[2]:.0f} s)  LoRA {means[1]:.4f} "
          f"({means[3]:.0f} s)")


if __name__ == "__main__":
    main()
