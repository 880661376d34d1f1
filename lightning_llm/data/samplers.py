"""A shuffling sampler whose order is a function of (seed, epoch, position): resumable at any batch."""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

import torch
from torch.utils.data import RandomSampler


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
