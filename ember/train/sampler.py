"""A sampler whose order is a pure function of (seed, epoch), so a run can resume mid-epoch exactly."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["ResumableSampler"]


class ResumableSampler(Sampler[int]):
    """Shuffles (or not) by `(seed, epoch)`, shards across ranks, and can skip the samples already seen.

    Unlike `RandomSampler` it draws nothing from the global RNG, so restoring the RNG state of a
    checkpoint and skipping `start` samples replays an epoch exactly. It also replaces
    `DistributedSampler`: each of `world_size` ranks gets every `world_size`-th index.

    Args:
        length: number of samples in the dataset.
        shuffle: permute the indices every epoch.
        seed: base seed of the permutation.
        rank: this process's rank.
        world_size: number of processes sharing the data.
        drop_last: drop the tail instead of padding so every rank gets the same number of samples.

    Example:
        >>> s = ResumableSampler(10, shuffle=True, seed=0); s.set_epoch(3); s.set_start(4)
    """

    def __init__(
        self,
        length: int,
        *,
        shuffle: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> None:
        self.length, self.shuffle, self.seed = length, shuffle, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of `epoch` (call before each epoch)."""
        self.epoch = epoch

    def set_start(self, start: int) -> None:
        """Skip the first `start` samples of this rank's order on the next pass only."""
        self.start = start

    def _per_rank(self) -> int:
        if self.drop_last:
            return self.length // self.world_size
        return math.ceil(self.length / self.world_size)

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.length, generator=g)
        else:
            order = torch.arange(self.length)
        total = self._per_rank() * self.world_size
        if total > self.length:  # pad by wrapping, as DistributedSampler does
            order = torch.cat([order, order[: total - self.length]])
        mine = order[:total][self.rank :: self.world_size]
        start, self.start = self.start, 0
        return iter(mine[start:].tolist())

    def __len__(self) -> int:
        return self._per_rank() - self.start
