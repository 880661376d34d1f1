"""Samplers: training order as a function of (seed, epoch, position), resumable at any batch; evaluation order
with every example once over all ranks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence, Sized
from typing import Any

import numpy as np
import torch
from torch.utils.data import DistributedSampler, RandomSampler


class ResumableRandomSampler(RandomSampler):
    """Each epoch's permutation is drawn from `seed + epoch` alone (as `DistributedSampler` does); the position
    inside the epoch is saved by `StatefulDataLoader` through `state_dict`.

    Why not `StatefulDataLoader(shuffle=True, generator=...)`: after a mid-epoch restore torchdata 0.11 leaves
    its generator one draw behind, so every later epoch is shuffled differently from the uninterrupted run.
    A `RandomSampler` subclass so that Lightning, under DDP, still swaps in a shuffling `DistributedSampler`.
    Lightning calls `set_epoch` before each epoch's iterator is used.
    """

    def __init__(self, data_source: Sized, seed: int) -> None:
        super().__init__(data_source)
        self.seed, self.epoch, self.yielded = int(seed), 0, 0
        self._resume_at: tuple[int, int] | None = None  # (epoch, position) from a checkpoint

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.data_source), generator=generator).tolist()
        start = self._resume_at[1] if self._resume_at and self._resume_at[0] == self.epoch else 0
        self._resume_at, self.yielded = None, start
        for index in order[start:]:
            self.yielded += 1
            yield index

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "yielded": self.yielded}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self._resume_at = (self.epoch, int(state["yielded"]))


class EvaluationSampler(DistributedSampler):
    """Evaluation order: each example exactly once over all ranks, longest first when lengths are given.

    Lightning gives evaluation loaders a `DistributedSampler`, which repeats examples until every rank has as many,
    so DDP accuracy/perplexity counted duplicates. Here the ranks take turns down the (length-sorted) order, so
    one rank may have one example, and one batch, fewer: fine in evaluation, where DDP syncs buffers on the first
    gradient-free forward only and torchmetrics sync their states once, at `compute`. Sorting puts rows of similar
    length in a batch (little padding) and the longest first (memory runs out on the first batch, if at all); the
    metrics are sums over examples, so the order does not change them.
    A `DistributedSampler` subclass, so that Lightning leaves it in place; with one process it is simply the order.
    """

    def __init__(self, data_source: Sized, lengths: Sequence[int] | np.ndarray | None = None, num_replicas: int = 1,
                 rank: int = 0) -> None:
        super().__init__(data_source, num_replicas=num_replicas, rank=rank, shuffle=False)  # type: ignore[arg-type]
        order = np.arange(len(data_source)) if lengths is None else np.argsort(-np.asarray(lengths), kind="stable")
        self.indices = order[rank::num_replicas].tolist()
        self.num_samples, self.total_size = len(self.indices), len(data_source)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return self.num_samples
