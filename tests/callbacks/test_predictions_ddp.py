"""Test predictions under DDP: two ranks, each on its DistributedSampler share (padded with a
repeated sample), gathered as the report callback gathers them (a collective simulated by two
threads) — every test sample once, in index order, as one process would have written it."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from fersuite.callbacks.reports import _StageBuffer, gather_rows, predictions_from_rows
from fersuite.data.synthetic_datamodule import SyntheticDataModule
from fersuite.models.registry import create_model
from fersuite.reporting.run_report import Predictions

WORLD = 2
TEST_SIZE = 41  # odd: the sampler pads rank 1's share with a repeat of sample 0


class _Group:
    """``all_gather`` of WORLD threads: each passes its tensor, all get them stacked."""

    def __init__(self) -> None:
        self.barrier = threading.Barrier(WORLD, timeout=30)
        self.slots: list[torch.Tensor | None] = [None] * WORLD

    def all_gather(self, rank: int) -> Callable[[torch.Tensor], torch.Tensor]:
        def gather(tensor: torch.Tensor) -> torch.Tensor:
            self.slots[rank] = tensor
            self.barrier.wait()
            out = torch.stack([t for t in self.slots if t is not None])
            self.barrier.wait()  # everyone has read before a slot is written again
            return out

        return gather


def _rows(
    net: torch.nn.Module, loader: DataLoader, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    buffer = _StageBuffer()
    with torch.no_grad():
        for batch in loader:
            buffer.add(net(batch["image"]), batch, rows=True, has_va=True)
    return buffer.rows(num_classes)


def _on_every_rank(
    run: Callable[[int, Callable[[torch.Tensor], torch.Tensor]], object],
) -> list[object]:
    group, results, errors = _Group(), [None] * WORLD, []

    def target(rank: int) -> None:
        try:
            results[rank] = run(rank, group.all_gather(rank))
        except Exception as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)
            group.barrier.abort()

    threads = [threading.Thread(target=target, args=(r,)) for r in range(WORLD)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def test_ranks_gathered_give_each_sample_once_in_order() -> None:
    torch.manual_seed(0)
    dm = SyntheticDataModule(
        train_size=8, val_size=8, test_size=TEST_SIZE, batch_size=8, num_workers=0,
        image_size=48, in_chans=1, cache_dir=None,
    )  # fmt: skip
    dm.setup("test")
    ds = dm.dataset("test")
    names = dm.class_names
    net = create_model("lightweight_cnn", num_classes=len(names), in_chans=1, input_size=48)
    net.eval()

    single = predictions_from_rows(*_rows(net, DataLoader(ds, batch_size=8), len(names)), names)
    assert single.index.tolist() == list(range(TEST_SIZE))

    shares = []

    def rank_job(rank: int, all_gather: Callable[[torch.Tensor], torch.Tensor]) -> Predictions:
        sampler = DistributedSampler(ds, num_replicas=WORLD, rank=rank, shuffle=False)
        ints, floats = _rows(net, DataLoader(ds, batch_size=8, sampler=sampler), len(names))
        shares.append(ints[:, 0].tolist())
        ints = gather_rows(all_gather, ints, WORLD)
        floats = gather_rows(all_gather, floats, WORLD)
        assert len(ints) == len(floats) == TEST_SIZE + 1  # the padding repeat is there
        return predictions_from_rows(ints, floats, names)

    results = _on_every_rank(rank_job)
    seen = sorted(i for share in shares for i in share)
    assert len(seen) == TEST_SIZE + 1 and len(set(seen)) == TEST_SIZE  # one repeat
    for got in results:
        assert isinstance(got, Predictions)
        assert got.index.tolist() == list(range(TEST_SIZE))  # no duplicate, in order
        np.testing.assert_array_equal(got.target, single.target)
        np.testing.assert_array_equal(got.pred, single.pred)
        np.testing.assert_allclose(got.probs, single.probs, atol=1e-6)
        for mine, theirs in zip(got.va_columns(), single.va_columns(), strict=True):
            np.testing.assert_allclose(mine, theirs, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("sizes", [(3, 5), (0, 4), (2, 0)])
def test_gather_rows_with_uneven_shares(sizes: tuple[int, int]) -> None:
    local = [
        torch.arange(n * 2, dtype=torch.float32).view(n, 2) + 100 * r for r, n in enumerate(sizes)
    ]
    results = _on_every_rank(lambda rank, gather: gather_rows(gather, local[rank], WORLD))
    for got in results:
        assert torch.equal(got, torch.cat(local))  # type: ignore[arg-type]


def test_a_single_process_needs_no_collective() -> None:
    rows = torch.ones(3, 2)

    def never(t: torch.Tensor) -> torch.Tensor:
        raise AssertionError("no all_gather with one process")

    assert gather_rows(never, rows, 1) is rows
