"""fersuite.data.samplers.repeated_indices: the samples an evaluation DistributedSampler gives
a rank only as padding; left out, every sample is scored exactly once over the ranks."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data.distributed import DistributedSampler

from fersuite.data.samplers import ResumableSampler, repeated_indices


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize(("n", "world"), [(33, 2), (63, 2), (10, 4), (3, 4), (2, 8), (1, 3)])
def test_without_the_repeats_every_sample_is_scored_once(n: int, world: int, shuffle: bool) -> None:
    scored: list[int] = []
    padded = 0
    for rank in range(world):
        sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=shuffle)
        sampler.set_epoch(3)
        share = [int(i) for i in sampler]
        assert len(share) == sampler.num_samples  # every rank the same number of steps
        repeats = repeated_indices(sampler)
        dropped = set() if repeats is None else set(repeats.tolist())
        assert len(share) == len(set(share))  # an index occurs once in one rank's share
        padded += len(dropped)
        scored += [i for i in share if i not in dropped]
    assert sorted(scored) == list(range(n))
    assert padded == world * -(-n // world) - n


def test_a_sampler_that_pads_nothing_or_is_not_distributed_repeats_nothing() -> None:
    assert repeated_indices(DistributedSampler(range(64), num_replicas=2, rank=1)) is None
    assert repeated_indices(DistributedSampler(range(63), 2, 1, drop_last=True)) is None
    assert repeated_indices(torch.utils.data.SequentialSampler(range(63))) is None
    assert repeated_indices(None) is None
    # the train sampler pads too, but it is the train split's: nothing is scored from it
    assert repeated_indices(ResumableSampler(63, num_replicas=2, rank=1)) is None
