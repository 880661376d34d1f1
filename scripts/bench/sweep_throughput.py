"""Trials per hour of one Optuna search of the classification demo run one trial at a time (Hydra's basic
launcher, in the sweep's process) and two at a time (`hydra/launcher=joblib hydra.launcher.n_jobs=2
hydra.sweeper.n_jobs=2`: worker processes, each job given cores/2 CPU threads by the sweeper). Same seed, each
in a fresh study; prints wall time, trials/hour and the ratios side by side, with the load average (the machine
may be shared, and then the figures say as much about the neighbours as about the launchers). The third search,
sequential with one CPU thread, tells apart what running two jobs at once gains from what one thread per job
gains: on a busy machine torch's default pool of one thread per core loses much of its time waiting.

    python -m scripts.bench.sweep_throughput
    python -m scripts.bench.sweep_throughput --trials 6 --common trainer.max_epochs=3

TPE's first n_startup_trials (5) are random points from the seed, so up to 5 trials the two searches train the
same points; the best values printed should then be equal.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from lightning_llm.runtime.job_resources import THREADS_ENV

# Short trials (1 epoch of 25 batches) so the three searches fit in a few minutes.
COMMON = ["experiment=classify_demo", "hparams_search=optuna", "trainer.max_epochs=1",
          "++trainer.limit_train_batches=25", "logger=csv", "callbacks.rich_progress_bar=null"]
ONE_THREAD = {"OMP_NUM_THREADS": "1", THREADS_ENV: "1"}
# name: (overrides, environment)
SEARCHES = {"sequential": ([], {}),
            "sequential, 1 thread": ([], ONE_THREAD),
            "parallel": (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2"], {})}


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def search(out: Path, name: str, trials: int, seed: int, extra: list[str], env: dict[str, str]) -> dict:
    """One sweep in its own study and directory: its summary, wall time and the load average around it."""
    name = name.replace(", ", "_").replace(" ", "_")
    db = out / f"{name}.db"
    db.unlink(missing_ok=True)
    command = [sys.executable, "-m", "lightning_llm.train", *COMMON, *extra, f"seed={seed}",
               f"hydra.sweeper.n_trials={trials}", f"hydra.sweeper.study_name={name}",
               f"hydra.sweeper.storage=sqlite:///{db.resolve()}", f"hydra.sweep.dir={(out / name).resolve()}"]
    print("$", shlex.join([*(f"{k}={v}" for k, v in env.items()), "llm-train", *command[3:]]), flush=True)
    before, start = load(), time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True, env={**os.environ, **env})
    wall = time.perf_counter() - start
    summary = OmegaConf.to_container(OmegaConf.load(out / name / "optimization_results.yaml"))
    return {**summary, "wall_s": wall, "per_hour": trials * 3600 / wall, "load": f"{before} -> {load()}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--common", nargs="*", default=[], help="extra overrides for both searches")
    parser.add_argument("--out", type=Path, default=Path("outputs/sweep_throughput"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"{os.cpu_count()} CPUs, load average {load()} (1/5/15 min)")
    runs = {name: search(args.out, name, args.trials, args.seed, [*args.common, *extra], env)
            for name, (extra, env) in SEARCHES.items()}
    base = runs["sequential"]["per_hour"]
    print(f"\n{'search':<21} {'trials':>6} {'done':>5} {'wall s':>7} {'trials/h':>8} {'ratio':>6} {'best':>8}  "
          "load before -> after")
    for name, run in runs.items():
        print(f"{name:<21} {args.trials:>6} {run['n_complete']:>5} {run['wall_s']:>7.0f} {run['per_hour']:>8.0f} "
              f"{run['per_hour'] / base:>5.2f}x {run['best_value']:>8.4f}  {run['load']}")


if __name__ == "__main__":
    main()
