"""A/B machinery shared by the benchmarks: alternating rounds in one process, loss parity, result rows.

Two training loops that cannot be stepped from outside (Lightning's `fit`, transformers' `Trainer.train`) are
run in two threads that hand a turn to each other, so only one of them computes at any time: each side runs
`warmup` untimed steps, then `rounds` timed rounds of `steps` steps, A B A B ... Background load on a shared
machine then hits both sides alike, and the median over round pairs discards the disturbed ones.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass
class Result:
    """One line of the summary table. `ratio` is ours/baseline throughput (higher is better for us)."""

    name: str
    what: str
    ours: str
    baseline: str
    ratio: float | None
    goal: str
    parity: str
    notes: list[str] = field(default_factory=list)

    def verdict(self) -> str:
        """A check mark at or above the goal, "✓ (min)" between a "(min X)" minimum and the goal, a cross below."""
        if self.ratio is None or not self.goal.startswith(">="):
            return ""
        goal = float(self.goal[2:].split()[0].rstrip("x"))
        minimum = float(self.goal.split("(min")[1].strip(" )")) if "(min" in self.goal else goal
        return "✓" if self.ratio >= goal else "✓ (min)" if self.ratio >= minimum else "✗"


class SideFailed(RuntimeError):
    """The other side of an alternation raised; this one stops instead of waiting forever."""


class Alternation:
    """Turn-taking between side loops running in threads: call `step_done(side, loss)` after each optimizer
    step; it records the loss, and at the end of warm-up and of each timed round hands the turn over.

    Rounds run in snake order (A B C, C B A, A B C, ...) so that a load that drifts during a benchmark does not
    always favour the side that goes first.
    """

    def __init__(self, n_sides: int, warmup: int, steps: int, rounds: int) -> None:
        if warmup < 1 or steps < 1 or rounds < 1:
            raise ValueError("warmup, steps and rounds must be >= 1 (warm-up also absorbs each loop's setup)")
        self.n, self.warmup, self.steps, self.rounds = n_sides, warmup, steps, rounds
        self.total_steps = warmup + steps * rounds
        self.times: list[list[float]] = [[] for _ in range(n_sides)]
        self.losses: list[list[torch.Tensor]] = [[] for _ in range(n_sides)]
        self._count = [0] * n_sides
        self._start = [0.0] * n_sides
        self._done = [False] * n_sides
        sides = list(range(n_sides))
        self._schedule = sides + [i for r in range(rounds) for i in (sides if r % 2 == 0 else sides[::-1])]
        self._slot = 0
        self._turn = 0
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._profilers: list[cProfile.Profile] = []

    def wait_turn(self, side: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._turn == side or self._error is not None)
            if self._error is not None:
                raise SideFailed from self._error
        if self._profilers and self._count[side] >= self.warmup:
            self._profilers[side].enable()
        self._start[side] = time.perf_counter()

    def step_done(self, side: int, loss: torch.Tensor | float) -> None:
        self.losses[side].append(loss.detach() if isinstance(loss, torch.Tensor) else torch.tensor(loss))
        self._count[side] += 1
        n = self._count[side]
        if n < self.warmup or (n > self.warmup and (n - self.warmup) % self.steps):
            return
        if n > self.warmup:
            self.times[side].append(time.perf_counter() - self._start[side])
            if self._profilers:
                self._profilers[side].disable()
        if n >= self.total_steps:
            self.finish(side)
            return
        self._hand_over(side)
        self.wait_turn(side)

    def _hand_over(self, side: int) -> None:
        """Give the turn to the side of the next slot of the schedule (possibly `side` itself)."""
        with self._cond:
            self._slot += 1
            while self._slot < len(self._schedule) and self._done[self._schedule[self._slot]]:
                self._slot += 1  # a side whose loop ended early
            if self._slot < len(self._schedule):
                self._turn = self._schedule[self._slot]
            self._cond.notify_all()

    def finish(self, side: int) -> None:
        """This side is through: pass the turn on and wait for every side, so no teardown overlaps a timed round."""
        with self._cond:
            self._done[side] = True
        self._hand_over(side)
        with self._cond:
            self._cond.wait_for(lambda: all(self._done) or self._error is not None)

    def fail(self, error: BaseException) -> None:
        with self._cond:
            if self._error is None and not isinstance(error, SideFailed):
                self._error = error
            self._cond.notify_all()

    def run(self, sides: Sequence[Callable[[int], None]], profile_to: Path | None = None) -> None:
        """Run `sides[i](i)` in threads, side 0 first; re-raise the first error of any side. With `profile_to`,
        each side's timed rounds (not warm-up, setup or teardown) run under cProfile, measuring the CPU time of
        the side's own thread, and its stats go to `<profile_to>-<i>.prof`."""
        if profile_to is not None:
            self._profilers = [cProfile.Profile(time.thread_time) for _ in sides]

        def target(i: int) -> None:
            try:
                self.wait_turn(i)
                sides[i](i)
                if not self._done[i]:  # the loop ended early (fewer batches than steps): do not block the others
                    self.finish(i)
            except BaseException as err:  # noqa: BLE001 - handed to the main thread below
                self.fail(err)

        threads = [threading.Thread(target=target, args=(i,), name=f"side-{i}") for i in range(len(sides))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i, profiler in enumerate(self._profilers):
            profiler.dump_stats(f"{profile_to}-{i}.prof")
        if self._error is not None:
            raise self._error
        for i, times in enumerate(self.times):
            if len(times) < self.rounds:
                raise RuntimeError(f"side {i} timed {len(times)} of {self.rounds} rounds: not enough batches")

    def loss_diff(self, a: int = 0, b: int = 1) -> float:
        """Largest absolute difference of the per-step losses of two sides (same weights, data, optimizer)."""
        la, lb = torch.stack(self.losses[a]).double(), torch.stack(self.losses[b]).double()
        if la.shape != lb.shape:
            return float("inf")
        return float((la - lb).abs().max())

    def ratio(self, ours: int = 0, base: int = 1) -> float:
        """Median over round pairs of baseline time / our time (throughput of ours relative to the baseline)."""
        return statistics.median(tb / to for to, tb in zip(self.times[ours], self.times[base]))

    def round_times(self, names: Sequence[str]) -> str:
        return "; ".join(f"{name} " + " ".join(f"{t:.2f}" for t in times) for name, times in zip(names, self.times))

    def median_time(self, side: int) -> float:
        return statistics.median(self.times[side])


def profile_summary(path: str | Path, steps: int, top: int = 12) -> str:
    """CPU ms per step of one side's profile, total and by function (own time), heaviest first."""
    stats = pstats.Stats(str(path))
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:top]  # type: ignore[attr-defined]
    lines = [f"{Path(path).name}: {stats.total_tt / steps * 1e3:.2f} ms CPU per step (own thread), top by own time:"]
    for (filename, line, name), (_, calls, own, cumulative, _) in rows:
        where = name if filename == "~" else f"{Path(filename).name}:{line}({name})"
        lines.append(f"    {own / steps * 1e3:7.3f} ms/step own, {cumulative / steps * 1e3:7.3f} cumulative, "
                     f"{calls / steps:5.1f} calls/step  {where}")
    return "\n".join(lines)


def alternate_calls(fns: Sequence[Callable[[], Any]], rounds: int, warmup: int = 1) -> tuple[list[list[float]],
                                                                                              list[Any]]:
    """Time plain calls A B A B ... (`warmup` untimed calls of each first); returns times and last outputs."""
    outputs: list[Any] = [None] * len(fns)
    times: list[list[float]] = [[] for _ in fns]
    for r in range(warmup + rounds):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            outputs[i] = fn()
            if r >= warmup:
                times[i].append(time.perf_counter() - t0)
    return times, outputs


def median_ratio(ours: list[float], base: list[float]) -> float:
    """Median over pairs of baseline time / our time."""
    return statistics.median(b / o for o, b in zip(ours, base))


def parity_text(diff: float, tol: float) -> str:
    verdict = "ok" if diff <= tol else "MISMATCH"
    return f"{verdict} (max abs diff {diff:.1e})"


_ROOT: list[Path] = []  # where workdir() creates folders; set by run.py to a folder it deletes at exit


def set_workdir_root(root: Path) -> None:
    _ROOT[:] = [Path(root)]


def workdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"bench-{prefix}-", dir=_ROOT[0] if _ROOT else None))


def offline_env() -> None:
    """No network, no tokenizer thread pool fighting the training threads for the 2 cores."""
    os.environ.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                       "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled",
                       "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"})


def markdown_table(results: Sequence[Result]) -> str:
    rows = ["| benchmark | measures | ours | baseline | ours/baseline (median) | goal | loss/output parity |",
            "|---|---|---|---|---|---|---|"]
    for r in results:
        ratio = "n/a" if r.ratio is None else f"{r.ratio:.2f} {r.verdict()}".rstrip()
        rows.append(f"| {r.name} | {r.what} | {r.ours} | {r.baseline} | {ratio} | {r.goal} | {r.parity} |")
    return "\n".join(rows)
