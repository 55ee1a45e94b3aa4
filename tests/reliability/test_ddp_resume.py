"""DDP on 2 CPU processes: every epoch is reshuffled, the ranks split it, and checkpoints hold
the sampler position that a resume under DDP restores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, run_env
from tests.reliability.index_recorder import ENV as INDEX_ENV

pytestmark = pytest.mark.long(2)

TRAIN = 96


@pytest.mark.smoke
@pytest.mark.ddp
@pytest.mark.subprocess
def test_ddp_two_epochs_reshuffle_and_split_the_data_between_ranks(tmp_path: Path) -> None:
    env = run_env(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO)])
    env[INDEX_ENV] = str(tmp_path)
    res = subprocess.run(
        [
            str(Path(sys.executable).parent / "fersuite-train"),
            "trainer=ddp_cpu",
            "trainer.max_epochs=2",
            f"data.train_size={TRAIN}",
            "data.val_size=16",
            "+trainer.num_sanity_val_steps=0",
            "data.test_size=32",
            "data.batch_size=16",  # 48 samples per rank: 3 full batches, nothing dropped
            "data.num_workers=0",
            "model=lightweight_cnn",
            "model.width_mult=0.25",
            "model.expansion_channels=32",
            "logger=none",
            "test=false",
            "~callbacks.efficiency",
            "~callbacks.progress_bar",
            "~callbacks.reports",
            "+callbacks.record._target_=tests.reliability.index_recorder.RecordTrainIndices",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for epoch in ("0", "1"):
        a, b = seen[0][epoch], seen[1][epoch]
        assert len(a) == len(b) == TRAIN // 2
        assert set(a).isdisjoint(b), f"epoch {epoch}: ranks share samples"
        assert sorted(a + b) == list(range(TRAIN)), f"epoch {epoch}: samples missing"
    for rank in (0, 1):  # a new order every epoch, on each rank
        assert seen[rank]["0"] != seen[rank]["1"]
    assert set(seen[0]["0"]) != set(seen[0]["1"])  # and a new split between the ranks

    (run,) = (tmp_path / "logs" / "train" / "runs").glob("*")
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    # Written after the last batch of epoch 1: a resume starts epoch 2 at its first sample.
    sampler = ckpt["callbacks"]["fersuite.RNGState"]["sampler"]
    assert (sampler["epoch"], sampler["start"]) == (2, 0)
