"""Samplers: training order as a function of (seed, epoch, position), resumable at any batch; evaluation order
with every example once over all ranks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence, Sized
from typing import Any

import numpy as np
import torch
from torch.utils.data import DistributedSampler, RandomSampler


class _ResumableOrder:
    """An epoch's order as a function of (seed, epoch) alone, resumable at any position: `StatefulDataLoader`
    saves and restores the position through `state_dict`/`load_state_dict`; Lightning calls `set_epoch` before
    each epoch's iterator is used."""

    seed: int
    epoch: int

    def _start_resumable(self) -> None:
        self.yielded = 0
        self._resume_at: tuple[int, int] | None = None  # (epoch, position) from a checkpoint

    def _epoch_order(self) -> list[int]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[int]:
        order = self._epoch_order()
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


class ResumableRandomSampler(_ResumableOrder, RandomSampler):
    """Each epoch's permutation is drawn from `seed + epoch` alone (as `DistributedSampler` does).

    Why not `StatefulDataLoader(shuffle=True, generator=...)`: after a mid-epoch restore torchdata 0.11 leaves
    its generator one draw behind, so every later epoch is shuffled differently from the uninterrupted run.
    A `RandomSampler` subclass so that Lightning, under DDP, still swaps in a shuffling `DistributedSampler`.
    """

    def __init__(self, data_source: Sized, seed: int) -> None:
        super().__init__(data_source)
        self.seed, self.epoch = int(seed), 0
        self._start_resumable()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _epoch_order(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(len(self.data_source), generator=generator).tolist()


class LengthGroupedSampler(_ResumableOrder, DistributedSampler):
    """`data.group_by_length=true`: the order of transformers' `LengthGroupedSampler` (a random permutation cut
    into megabatches of up to 50 batches, each sorted longest first, the longest row of all in the first batch),
    so a batch holds rows of similar length and pads little, drawn from `seed + epoch` and resumable like
    `ResumableRandomSampler`.

    Transformers' own sampler is not used as is: it draws each epoch from one generator's running state, which a
    mid-epoch resume cannot restore; its ordering function `get_length_grouped_indices` is. A `DistributedSampler`
    subclass so that Lightning leaves it in place under DDP: the ranks take turns down the grouped order, padded
    to equal shares as `DistributedSampler` pads (transformers' `DistributedLengthGroupedSampler` does the same),
    so each rank's batches are length-grouped too.
    """

    def __init__(self, data_source: Sized, lengths: Sequence[int] | np.ndarray, batch_size: int, seed: int,
                 num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(data_source, num_replicas=num_replicas, rank=rank, shuffle=True,  # type: ignore[arg-type]
                         seed=int(seed))
        self.lengths, self.batch_size = np.asarray(lengths).tolist(), batch_size
        self._start_resumable()

    def _epoch_order(self) -> list[int]:
        from transformers.trainer_pt_utils import get_length_grouped_indices  # only when grouping is asked for

        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = get_length_grouped_indices(self.lengths, self.batch_size, generator=generator)
        order = (order * -(-self.total_size // len(order)))[:self.total_size]  # equal shares, as DistributedSampler
        return order[self.rank:self.total_size:self.num_replicas]


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
