"""Pretrained start vs from scratch: one masked-LM run, then the same fine-tuning budget from its export and from
a random init, over a few seeds. Prints both test accuracies per seed and their means.

    python -m scripts.compare.pretrain_then_finetune                       # MLM on the bundled review texts (no labels)
    python -m scripts.compare.pretrain_then_finetune --mlm-on stories      # MLM on the bundled stories (mlm_demo)
    python -m scripts.compare.pretrain_then_finetune --seeds 1 2 3 --finetune trainer.max_epochs=2

Each step is a plain `llm-train` command (printed before it runs), so any row can be reproduced by hand.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

BUNDLED = Path(__file__).resolve().parents[2] / "lightning_llm" / "data" / "bundled"
REVIEW_TEXTS = [f"data.{split}_file={BUNDLED / f'reviews_{split}.csv'}" for split in ("train", "validation", "test")]
# The classifier's tokenizer size, so that the MLM export's tokenizer is the one a from-scratch classifier trains.
MLM_ON = {"reviews": ["task_name=mlm_reviews", *REVIEW_TEXTS, "model.tokenizer_vocab_size=4000",
                      "trainer.max_epochs=20"],
          "stories": []}


def llm_train(run_dir: Path, *overrides: str) -> dict:
    command = [sys.executable, "-m", "lightning_llm.train", *overrides, f"hydra.run.dir={run_dir}",
               "callbacks.rich_progress_bar=null"]
    print("$", shlex.join(["llm-train", *command[3:]]), flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads((run_dir / "results.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mlm-on", choices=sorted(MLM_ON), default="reviews")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--finetune", nargs="*", default=[], help="extra overrides for both fine-tuning runs")
    parser.add_argument("--out", type=Path, default=Path("outputs/pretrain_then_finetune_compare"))
    args = parser.parse_args()

    mlm = llm_train(args.out / f"mlm_{args.mlm_on}", "experiment=mlm_demo", *MLM_ON[args.mlm_on])
    print(f"MLM: val/mlm_acc {mlm['val']['val/mlm_acc']:.4f} "
          f"(most-frequent-token baseline {mlm['val']['val/mlm_majority_acc']:.4f})")
    rows = []
    for seed in args.seeds:
        accs = [llm_train(args.out / f"{start}_seed{seed}", "experiment=pretrain_then_finetune", f"seed={seed}",
                          f"model.pretrained_model_name_or_path={path}", *args.finetune)["test"]["test/acc"]
                for start, path in (("pretrained", mlm["hf_model"]), ("scratch", "null"))]
        rows.append(accs)
        print(f"seed {seed}: test/acc pretrained {accs[0]:.4f}  from scratch {accs[1]:.4f}", flush=True)
    means = [statistics.mean(col) for col in zip(*rows)]
    print(f"mean over {len(rows)} seeds: test/acc pretrained {means[0]:.4f}  from scratch {means[1]:.4f}")


if __name__ == "__main__":
    main()
