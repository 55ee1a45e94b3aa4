"""A resumable train sampler: epoch ``e`` visits a permutation derived from ``(seed, e)`` only.

Because the order of an epoch depends on nothing but the seed and the epoch number, a run
killed in the middle of an epoch can resume at the exact sample it stopped at: the sampler's
state (``epoch``, ``start`` = samples this process already consumed) is saved in the checkpoint
by :class:`fersuite.callbacks.rng_state.RNGStateCallback` and the first iteration after loading
skips those samples.

Under DDP (``num_replicas`` > 1) the sampler shards the epoch itself, like
``torch.utils.data.DistributedSampler`` without shuffling of its own: the epoch order is padded
(by repeating its start) to a multiple of ``num_replicas`` and rank ``r`` takes positions
``r, r + W, r + 2W, ...``. Every rank consumes as many samples as the others, so one ``start``
resumes all of them. Being a ``DistributedSampler``, Lightning leaves it in place instead of
wrapping it.

Each yielded index is a :class:`SeededIndex`: an ``int`` that also carries a per-sample
augmentation seed derived from ``(seed, epoch, position)``. ``ArrayAffectDataset`` draws the
augmentation of that sample from a generator seeded with it, so augmentation does not depend
on the global RNG, on the number of workers or on whether the run was interrupted.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data.distributed import DistributedSampler

_MIX = 0x9E3779B97F4A7C15  # 64-bit golden-ratio constant, decorrelates nearby seeds
_MASK = (1 << 63) - 1


def mix_seed(*parts: int) -> int:
    """A deterministic non-negative 63-bit seed from integers (no global RNG involved)."""
    h = 0x2545F4914F6CDD1D
    for p in parts:
        h = ((h ^ (int(p) & _MASK)) * _MIX + 0x632BE59BD9B4E019) & _MASK
        h ^= h >> 29
    return h


def repeated_indices(sampler: object) -> torch.Tensor | None:
    """The dataset indices that an evaluation ``DistributedSampler`` gives this rank only to pad
    the ranks' shares to one length; None when it repeats nothing here.

    Lightning puts such a sampler (``drop_last=False``) on the validation and test loaders
    under DDP: the index order (a permutation when ``shuffle``) is extended by its own start
    to a multiple of the world size ``W``, and rank ``r`` takes positions ``r, r + W, ...``.
    The positions past the dataset's length are the repeats; each is one sample that another
    rank also scores, so the metrics must leave it out to count every sample once. An index
    occurs at most once in one rank's share, so the indices identify the repeats.
    """
    if not isinstance(sampler, DistributedSampler) or isinstance(sampler, ResumableSampler):
        return None
    n = len(sampler.dataset)  # type: ignore[arg-type]
    if sampler.drop_last or sampler.total_size <= n:
        return None
    rank, world = int(sampler.rank), int(sampler.num_replicas)
    share = [int(i) for i in sampler]  # this rank's positions rank + j * world, in order
    repeats = [idx for j, idx in enumerate(share) if rank + j * world >= n]
    return torch.tensor(repeats, dtype=torch.long) if repeats else None


class SeededIndex(int):
    """A dataset index that also carries the seed for that sample's augmentation."""

    aug_seed: int

    def __new__(cls, value: int, aug_seed: int) -> SeededIndex:
        obj = super().__new__(cls, value)
        obj.aug_seed = aug_seed
        return obj

    def __reduce__(self) -> tuple[Any, ...]:
        return (SeededIndex, (int(self), self.aug_seed))


class ResumableSampler(DistributedSampler):  # type: ignore[type-arg]
    """Shuffled (or weighted, with replacement) sampling that can resume mid-epoch.

    Args:
        num_samples: size of the dataset.
        seed: base seed; epoch ``e`` uses ``mix_seed(seed, e)``. Must be equal on all ranks.
        weights: per-sample weights for weighted sampling with replacement (``None``: a
            permutation of the dataset).
        num_replicas, rank: DDP world size and this process's rank (1 and 0: no sharding).
    """

    # DistributedSampler.__init__ is not called: it wants a dataset and an initialised
    # process group; this class sets every attribute that base class has.
    def __init__(
        self,
        num_samples: int,
        seed: int = 0,
        weights: Sequence[float] | torch.Tensor | None = None,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"ResumableSampler needs at least one sample, got {num_samples}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} of {num_replicas} replicas is not a valid DDP rank")
        self.dataset_size = int(num_samples)
        self.seed = int(seed)
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)
        if self.weights is not None and len(self.weights) != self.dataset_size:
            raise ValueError(
                f"sampler weights have {len(self.weights)} entries for {self.dataset_size} samples"
            )
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.num_samples = math.ceil(self.dataset_size / self.num_replicas)  # per rank
        self.total_size = self.num_samples * self.num_replicas
        self.shuffle = True
        self.drop_last = False
        self.dataset = range(self.dataset_size)
        self.epoch = 0
        self._resume: tuple[int, int] | None = None  # (epoch, samples to skip)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def order(self, epoch: int) -> torch.Tensor:
        """The full index order of ``epoch`` (a pure function of the seed and the epoch)."""
        gen = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
        if self.weights is None:
            return torch.randperm(self.dataset_size, generator=gen)
        return torch.multinomial(self.weights, self.dataset_size, replacement=True, generator=gen)

    def __iter__(self) -> Iterator[int]:
        epoch = self.epoch
        start = 0
        if self._resume is not None and self._resume[0] == epoch:
            start = self._resume[1]
        self._resume = None
        order = self.order(epoch).tolist()
        for k in range(start, self.num_samples):
            pos = self.rank + k * self.num_replicas  # position in the padded epoch order
            yield SeededIndex(order[pos % self.dataset_size], mix_seed(self.seed, epoch, pos, 1))

    # -- resume -----------------------------------------------------------------------------
    def state_dict(self, consumed: int = 0, finished: bool = False) -> dict[str, int]:
        """Plain-data state: the epoch and how many of its samples this rank consumed.

        A finished epoch (``finished``, or every sample consumed) is stored as the start of
        the next one.
        """
        if finished or consumed >= self.num_samples:
            return {"seed": self.seed, "epoch": self.epoch + 1, "start": 0}
        return {"seed": self.seed, "epoch": self.epoch, "start": int(consumed)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """The next iteration runs epoch ``state['epoch']`` from sample ``state['start']``.

        The epoch is set at once, not only when Lightning calls :meth:`set_epoch`: a loader
        with worker processes draws its first indices when its iterator is created, and
        Lightning creates it before the epoch starts. The checkpoint's seed is adopted, so a
        run started without a fixed seed still resumes the order it was following.
        """
        self.seed = int(state.get("seed", self.seed))
        epoch, start = int(state["epoch"]), int(state["start"])
        if start >= self.num_samples:
            epoch, start = epoch + 1, 0
        self.epoch = epoch
        self._resume = (epoch, start)
