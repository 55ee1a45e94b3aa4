"""DDP on 2 CPU processes, from ONE training run of the console script shared by the tests:
the Hydra run dir is not duplicated per rank, the synchronised val and test figures are the
global ones with every sample counted once (odd splits: Lightning's sampler pads one rank's
share with a repeated sample), every epoch is reshuffled, the ranks split it, and checkpoints
hold the sampler position that a resume under DDP restores."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, TINY, run_env
from tests.reliability.index_recorder import ENV as INDEX_ENV

pytestmark = pytest.mark.long(0.8)

TRAIN = 96
VAL = 63  # 32 per rank: rank 1's last sample repeats sample 0 (padding)
TEST = 33  # 17 per rank in batches of 16: rank 1's second batch is only the repeated sample


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One 2-epoch DDP training (trainer=ddp_cpu) in a subprocess: Lightning's DDP launcher
    starts rank 1 by running the script again. Returns (its root dir, the Hydra run dir)."""
    root = tmp_path_factory.mktemp("ddp")
    env = run_env(root)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO)])
    env[INDEX_ENV] = str(root)
    res = subprocess.run(
        [
            str(Path(sys.executable).parent / "fersuite-train"),
            *TINY,
            "logger=csv",
            "trainer=ddp_cpu",
            "trainer.max_epochs=2",
            f"data.train_size={TRAIN}",
            f"data.val_size={VAL}",
            "+trainer.num_sanity_val_steps=0",
            f"data.test_size={TEST}",
            "data.batch_size=16",  # 48 samples per rank: 3 full batches, nothing dropped
            "data.num_workers=0",
            "model=lightweight_cnn",
            "model.width_mult=0.25",
            "model.expansion_channels=32",
            "+callbacks.record._target_=tests.reliability.index_recorder.RecordTrainIndices",
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    runs = list((root / "logs" / "train" / "runs").glob("*"))
    assert len(runs) == 1, f"Hydra run dir duplicated per rank: {runs}"
    return root, runs[0]


@pytest.mark.smoke
@pytest.mark.ddp
@pytest.mark.subprocess
def test_ddp_on_two_cpu_processes(ddp_run: tuple[Path, Path]) -> None:
    root, run = ddp_run
    runs = list((root / "logs" / "train" / "runs").glob("*"))
    assert runs == [run], f"Hydra run dir duplicated per rank: {runs}"
    metrics = json.loads((run / "metrics.json").read_text())
    ckpts = sorted(p.name for p in (run / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in ckpts and len(ckpts) == 2

    # The synchronised DDP val accuracy equals a single-process evaluation of the checkpoint.
    from fersuite.checkpoint import load_model_from_checkpoint
    from fersuite.data.synthetic_datamodule import SyntheticDataModule

    net, _ = load_model_from_checkpoint(run / "checkpoints" / "last.ckpt")
    dm = SyntheticDataModule(
        train_size=TRAIN,
        val_size=VAL,
        test_size=TEST,
        num_workers=0,
        cache_dir=str(root / "cache"),
    )
    dm.setup()
    right: list[bool] = []
    with torch.no_grad():
        for batch in dm.val_dataloader():
            pred = net(batch["image"]).expression.argmax(1)
            right += (pred == batch["expression"]).tolist()
    total = len(right)
    assert total == VAL
    assert metrics["val/acc"] == pytest.approx(sum(right) / total, abs=1e-6)
    # ... and not rank 0's own half (Lightning's unshuffled DistributedSampler: indices 0, 2, ..),
    # which an unsynchronised metric would log: in this run the two differ.
    rank0 = right[0::2]
    assert sum(rank0) / len(rank0) != pytest.approx(sum(right) / total, abs=1e-6)

    # The test figures: the best checkpoint scored once per test sample (the padded repeat
    # left out; an empty batch on rank 1 skipped), as a single process scores it.
    best = next(p for p in (run / "checkpoints").glob("best-*.ckpt"))
    net, _ = load_model_from_checkpoint(best)
    right = []
    with torch.no_grad():
        for batch in dm.test_dataloader():
            pred = net(batch["image"]).expression.argmax(1)
            right += (pred == batch["expression"]).tolist()
    assert len(right) == TEST
    assert metrics["test/acc"] == pytest.approx(sum(right) / TEST, abs=1e-6)
    support = [int(r["support"]) for r in _csv(run / "per_class_test.csv")]
    assert sum(support) == TEST  # the confusion matrix behind the report
    assert len(_csv(run / "predictions_test.csv")) == TEST


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.smoke
@pytest.mark.ddp
@pytest.mark.subprocess
def test_ddp_two_epochs_reshuffle_and_split_the_data_between_ranks(
    ddp_run: tuple[Path, Path],
) -> None:
    root, run = ddp_run
    seen = [json.loads((root / f"rank{r}.json").read_text()) for r in (0, 1)]
    for epoch in ("0", "1"):
        a, b = seen[0][epoch], seen[1][epoch]
        assert len(a) == len(b) == TRAIN // 2
        assert set(a).isdisjoint(b), f"epoch {epoch}: ranks share samples"
        assert sorted(a + b) == list(range(TRAIN)), f"epoch {epoch}: samples missing"
    for rank in (0, 1):  # a new order every epoch, on each rank
        assert seen[rank]["0"] != seen[rank]["1"]
    assert set(seen[0]["0"]) != set(seen[0]["1"])  # and a new split between the ranks

    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    # Written after the last batch of epoch 1: a resume starts epoch 2 at its first sample.
    sampler = ckpt["callbacks"]["fersuite.RNGState"]["sampler"]
    assert (sampler["epoch"], sampler["start"]) == (2, 0)
