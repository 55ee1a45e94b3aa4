"""The resumable sampler and how resume=auto picks a run."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from fersuite.data.samplers import ResumableSampler, SeededIndex
from fersuite.runs.resume import find_unfinished_run, relevant_overrides


def test_epoch_order_depends_only_on_seed_and_epoch() -> None:
    a, b = ResumableSampler(50, seed=3), ResumableSampler(50, seed=3)
    torch.manual_seed(0)
    a.set_epoch(2)
    first = list(a)
    torch.manual_seed(123)  # the global RNG plays no part
    b.set_epoch(2)
    assert list(b) == first and sorted(first) == list(range(50))
    b.set_epoch(3)
    assert list(b) != first


def test_resume_skips_consumed_samples_of_that_epoch_only() -> None:
    full = ResumableSampler(40, seed=1)
    full.set_epoch(1)
    order = list(full)
    resumed = ResumableSampler(40, seed=999)
    resumed.load_state_dict(full.state_dict(consumed=16))  # adopts the checkpoint's seed
    resumed.set_epoch(1)
    rest = list(resumed)
    assert rest == order[16:]
    assert [i.aug_seed for i in rest] == [i.aug_seed for i in order[16:]]  # type: ignore[attr-defined]
    assert len(list(resumed)) == 40  # the next pass is a full epoch again
    other = ResumableSampler(40, seed=1)
    other.load_state_dict({"seed": 1, "epoch": 0, "start": 16})
    other.set_epoch(1)  # a different epoch than the saved one: nothing skipped
    assert len(list(other)) == 40


def test_weighted_sampling_is_resumable_too() -> None:
    weights = torch.tensor([0.0, 1.0, 3.0, 0.0])
    s = ResumableSampler(4, seed=5, weights=weights)
    draws = list(s)
    assert set(draws) <= {1, 2} and len(draws) == 4
    assert list(ResumableSampler(4, seed=5, weights=weights)) == draws


def test_seeded_index_is_an_int_that_survives_pickling() -> None:
    idx = SeededIndex(7, aug_seed=42)
    back = pickle.loads(pickle.dumps(idx))
    assert back == 7 and back.aug_seed == 42 and [0, 1, 2, 3, 4, 5, 6, 7, 8][back] == 7


def _run(runs: Path, name: str, overrides: list[str], last: bool, done: bool) -> Path:
    run = runs / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if last:
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    if done:
        (run / "metrics.json").write_text("{}")
    return run


def test_finds_latest_unfinished_run_with_same_overrides(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    ovr = ["model=mit_fer", "seed=1"]
    _run(runs, "2026-01-01_00-00-00", ovr, last=True, done=True)  # finished
    _run(runs, "2026-01-02_00-00-00", ["model=timm"], last=True, done=False)  # other exp.
    _run(runs, "2026-01-03_00-00-00", ovr, last=False, done=False)  # died before a ckpt
    want = _run(runs, "2026-01-04_00-00-00", [*ovr, "hydra.run.dir=x"], last=True, done=False)
    current = ["seed=1", "resume=auto", "model=mit_fer"]
    assert find_unfinished_run(runs, current) == want
    assert find_unfinished_run(runs, ["model=lightweight_cnn"]) is None
    assert find_unfinished_run(runs, current, exclude=want) is None


def test_relevant_overrides_ignore_resume_and_hydra() -> None:
    assert relevant_overrides(
        ["resume=auto", "ckpt_path=last", "hydra.run.dir=d", "b=1", "a=2"]
    ) == [
        "a=2",
        "b=1",
    ]


@pytest.mark.parametrize("value", ["nowhere/run", "file.txt"])
def test_bad_resume_value_is_a_config_error(cfg_factory, value: str) -> None:  # type: ignore[no-untyped-def]
    from fersuite.errors import ConfigError
    from fersuite.runs.resume import resolve_resume

    with pytest.raises(ConfigError, match=r"resume=.*expected 'auto', a run dir"):
        resolve_resume(cfg_factory([f"resume={value}"]))


def test_ddp_ranks_shard_the_epoch_disjointly_and_resume_together() -> None:
    n, world = 10, 2  # 10 samples: 5 per rank, nothing padded
    ranks = [ResumableSampler(n, seed=4, num_replicas=world, rank=r) for r in range(world)]
    for epoch in (0, 1):
        for s in ranks:
            s.set_epoch(epoch)
        shards = [list(s) for s in ranks]
        assert all(len(sh) == len(s) == 5 for sh, s in zip(shards, ranks, strict=True))
        assert set(shards[0]).isdisjoint(shards[1])
        assert sorted(shards[0] + shards[1]) == list(range(n))
        # rank r takes positions r, r + W, ... of the single-process order of that epoch
        single = ResumableSampler(n, seed=4)
        single.set_epoch(epoch)
        order = list(single)
        assert shards[0] == order[0::2] and shards[1] == order[1::2]
    # 2 samples consumed on each rank: both continue where they stopped
    state = ranks[0].state_dict(consumed=2)
    for r, s in enumerate(ranks):
        s.set_epoch(1)
        full = list(s)
        resumed = ResumableSampler(n, seed=0, num_replicas=world, rank=r)
        resumed.load_state_dict(state)
        assert list(resumed) == full[2:]
    padded = [list(ResumableSampler(5, seed=1, num_replicas=2, rank=r)) for r in range(2)]
    assert len(padded[0]) == len(padded[1]) == 3 and set(padded[0] + padded[1]) == set(range(5))


def test_loaded_state_sets_the_epoch_before_lightning_does() -> None:
    """Workers draw indices when the loader's iterator is created, before ``set_epoch``."""
    ref = ResumableSampler(12, seed=3)
    ref.set_epoch(2)
    order = list(ref)
    s = ResumableSampler(12, seed=3)
    s.load_state_dict({"seed": 3, "epoch": 2, "start": 5})
    assert list(s) == order[5:]  # no set_epoch call in between
    finished = ResumableSampler(12, seed=3)
    finished.set_epoch(1)
    nxt = ResumableSampler(12, seed=3)
    nxt.load_state_dict(finished.state_dict(consumed=8, finished=True))  # drop_last epoch end
    assert nxt.epoch == 2 and list(nxt) == order


def test_loaders_and_profiling_leave_the_global_rng_alone(tmp_path: Path) -> None:
    from torch import nn

    from fersuite.data.synthetic_datamodule import SyntheticDataModule
    from fersuite.profiling import count_macs, measure_latency

    dm = SyntheticDataModule(
        train_size=8, val_size=8, test_size=8, num_workers=0, cache_dir=str(tmp_path)
    )
    dm.setup()
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())
    before = torch.get_rng_state()
    for loader in (dm.val_dataloader(), dm.test_dataloader(), dm.train_dataloader()):
        for _ in loader:
            pass
    count_macs(net, input_shape=(1, 1, 8, 8))
    measure_latency(net, (1, 1, 8, 8), warmup=1, runs=1)
    assert torch.equal(torch.get_rng_state(), before)
