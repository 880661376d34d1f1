"""Distillation vs the same student without a teacher, on the same budget: train (or reuse) a classify_demo teacher,
then experiment=distill_demo twice per seed, with the teacher (model.alpha as configured) and without it
(model.alpha=1: cross-entropy only, the teacher is not run in training). Prints test accuracy, parameter counts and
inference speed (examples/s, student and teacher timed side by side on the test batches) per seed, and the means.
`--task causal_lm` does the same for causal LMs: a gpt_demo teacher, experiment=distill_gpt_demo, test perplexity.

    python -m scripts.compare.distill_vs_scratch
    python -m scripts.compare.distill_vs_scratch --teacher outputs/classify_teacher/hf_model --seeds 1 2 3
    python -m scripts.compare.distill_vs_scratch --student trainer.max_epochs=3 model.hidden_size=64
    python -m scripts.compare.distill_vs_scratch --task causal_lm --seeds 1 2

Each step is a plain `llm-train` command (printed before it runs), so any row can be reproduced by hand.
CPU timings on a shared machine are noisy; the speed ratio is measured within one run.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

# task -> (teacher experiment, student experiment, the metric compared)
TASKS = {"classification": ("classify_demo", "distill_demo", "acc"),
         "causal_lm": ("gpt_demo", "distill_gpt_demo", "ppl")}

def llm_train(run_dir: Path, *overrides: str) -> dict:
    command = [sys.executable, "-m", "lightning_llm.train", *overrides, f"paths.output_dir={run_dir}",
               "callbacks.rich_progress_bar=null"]
    print("$", shlex.join(["llm-train", *command[3:]]), flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads((run_dir / "results.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(TASKS), default="classification")
    parser.add_argument("--teacher", type=Path, default=None,
                        help="a teacher's HF dir (default: train classify_demo, or gpt_demo for causal_lm)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--student", nargs="*", default=[], help="extra overrides for both student runs")
    parser.add_argument("--out", type=Path, default=None, help="default: outputs/distill_vs_scratch/<task>")
    args = parser.parse_args()
    teacher_experiment, student_experiment, metric = TASKS[args.task]
    out = args.out or Path("outputs/distill_vs_scratch") / args.task

    teacher = args.teacher
    if teacher is None:
        run = llm_train(out / "teacher", f"experiment={teacher_experiment}")
        teacher = Path(run["hf_model"])
        print(f"teacher: test/{metric} {run['test'][f'test/{metric}']:.4f}")
    rows = []
    for seed in args.seeds:
        common = [f"experiment={student_experiment}", f"model.teacher_name_or_path={teacher.resolve()}",
                  f"seed={seed}", *args.student]
        distilled = llm_train(out / f"distilled_seed{seed}", *common)
        scratch = llm_train(out / f"scratch_seed{seed}", *common, "model.alpha=1")
        d = distilled["details"]["test"]
        rows.append((d[f"student_{metric}"], scratch["test"][f"test/{metric}"], d[f"teacher_{metric}"],
                     d["student_speedup"]))
        print(f"seed {seed}: test/{metric} distilled {rows[-1][0]:.4f}  without teacher {rows[-1][1]:.4f}  "
              f"teacher {rows[-1][2]:.4f} | params student {d['student_params']:,} teacher {d['teacher_params']:,} "
              f"| student inference {d['student_speedup']:.1f}x the teacher's ({d['student_examples_per_s']:.0f} vs "
              f"{d['teacher_examples_per_s']:.0f} examples/s)", flush=True)
    means = [statistics.mean(col) for col in zip(*rows)]
    print(f"mean over {len(rows)} seeds: test/{metric} distilled {means[0]:.4f}  without teacher {means[1]:.4f}  "
          f"teacher {means[2]:.4f} | student inference {means[3]:.1f}x the teacher's")


if __name__ == "__main__":
    main()
