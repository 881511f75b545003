"""Which dataset items each rank reads at each training step: a pure function of (seed, step, rank).

Training runs for days and is interrupted (SLURM time limits, preemption), so the data order must not live
in a DataLoader's iterator state. Here the global sample stream is a concatenation of epochs, each a
permutation of the dataset drawn from ``np.random.default_rng([seed, epoch])``; global step ``s`` consumes
the ``batch_size * world_size`` consecutive stream positions starting at ``s * batch_size * world_size``
and rank ``r`` takes its own ``batch_size`` of them. Resuming at step ``s`` therefore reads exactly the
samples an uninterrupted run would have read, whatever the number of DataLoader workers.

Each yielded index encodes the epoch (``epoch * len(dataset) + item``) so that :class:`EpochIndexed`
can set the dataset's epoch per item inside the worker process: the loader's per-item randomness
(views, timesteps, targets) changes every epoch, as ``set_epoch`` would, without talking to the workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from torch.utils.data import Dataset, Sampler


class StepSampler(Sampler[int]):
    """Infinite, resumable, rank-aware index stream (see the module docstring)."""

    def __init__(
        self,
        length: int,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
    ) -> None:
        if length < 1:
            raise ValueError("cannot sample from an empty dataset")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside a world of size {world_size}")
        self.length, self.batch_size = int(length), int(batch_size)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.start_step = int(start_step)
        self._permutations: dict[int, np.ndarray] = {}

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._permutations:
            self._permutations = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.length)}
        return self._permutations[epoch]

    def step_indices(self, step: int) -> list[int]:
        """The encoded indices (``epoch * length + item``) rank ``self.rank`` reads at global ``step``."""
        first = (step * self.world_size + self.rank) * self.batch_size
        out = []
        for position in range(first, first + self.batch_size):
            epoch, offset = divmod(position, self.length)
            out.append(epoch * self.length + int(self._permutation(epoch)[offset]))
        return out

    def __iter__(self) -> Iterator[int]:
        step = self.start_step
        while True:
            yield from self.step_indices(step)
            step += 1


class EpochIndexed(Dataset):
    """Reads encoded index ``epoch * len(dataset) + item`` as item ``item`` of epoch ``epoch``."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.length = len(dataset)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Any:
        epoch, item = divmod(int(index), self.length)
        if getattr(self.dataset, "epoch", None) != epoch:
            self.dataset.set_epoch(epoch)
        sample = self.dataset[item]
        if isinstance(sample, dict):
            sample["epoch"] = epoch
        return sample
