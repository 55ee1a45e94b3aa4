"""Crash and resume: a run SIGKILLed mid-epoch, resumed, ends exactly like an uninterrupted one."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, run_env
from tests.reliability.killer import ENV as KILL_ENV

#: 128 samples / batch 16 = 8 steps per epoch, 2 epochs; last.ckpt every 2 steps.
RUN = [
    "trainer.max_epochs=2",
    "data.train_size=128",
    "data.val_size=32",
    "data.test_size=32",
    "data.batch_size=16",
    "data.num_workers=0",
    "model.name=test_resnet",
    "model.input_size=32",
    "trainer.deterministic=true",
    "checkpoint.every_n_train_steps=2",
    "~callbacks.efficiency",
    "~callbacks.progress_bar",
    "~callbacks.reports",
    "+callbacks.killer._target_=tests.reliability.killer.KillAtStep",
]
KILL_AT = 11  # mid-epoch 2 (steps 8..15), one step after the step-10 checkpoint


def _train(root: Path, *extra: str, kill_at: int | None = None) -> subprocess.CompletedProcess[str]:
    env = run_env(root)
    env["PYTHONPATH"] = str(REPO)
    env.pop(KILL_ENV, None)
    if kill_at is not None:
        env[KILL_ENV] = str(kill_at)
    root.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [str(Path(sys.executable).parent / "fersuite-train"), *RUN, *extra],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def _runs(root: Path) -> list[Path]:
    return sorted((root / "logs" / "train" / "runs").glob("*"))


def _load(path: Path) -> dict:  # type: ignore[type-arg]
    return torch.load(path, map_location="cpu", weights_only=True)  # type: ignore[no-any-return]


def _assert_all_checkpoints_load(run: Path) -> None:
    ckpts = sorted((run / "checkpoints").glob("*.ckpt"))
    assert ckpts, f"no checkpoints in {run}"
    for ckpt in ckpts:
        _load(ckpt)  # raises on a truncated or unsafe file


@pytest.mark.smoke
def test_sigkill_mid_epoch_then_resume_auto_matches_uninterrupted_run(tmp_path: Path) -> None:
    ref = _train(tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr[-3000:]
    (ref_run,) = _runs(tmp_path / "ref")
    ref_metrics = json.loads((ref_run / "metrics.json").read_text())

    root = tmp_path / "crash"
    killed = _train(root, kill_at=KILL_AT)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    (run,) = _runs(root)
    assert not (run / "metrics.json").exists()
    assert _load(run / "checkpoints" / "last.ckpt")["global_step"] == KILL_AT - 1
    _assert_all_checkpoints_load(run)
    wandb_id = (run / "wandb_run_id.txt").read_text().strip()

    resumed = _train(root, "resume=auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming {run}" in resumed.stdout
    metrics = json.loads((run / "metrics.json").read_text())

    compared = sorted(k for k in ref_metrics if k.startswith("test/") or k == "val/acc_best")
    assert {"test/acc", "test/loss", "test/valence_ccc", "test/arousal_rmse"} <= set(compared)
    assert {k: metrics[k] for k in compared} == {k: ref_metrics[k] for k in compared}

    # Same final weights, bit for bit, and the same number of optimizer steps.
    a, b = _load(ref_run / "checkpoints" / "last.ckpt"), _load(run / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 16
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    _assert_all_checkpoints_load(run)

    # The resumed run continued the same W&B run.
    assert (run / "wandb_run_id.txt").read_text().strip() == wandb_id
    offline_runs = list((run / "wandb").glob(f"offline-run-*-{wandb_id}"))
    assert len(offline_runs) == 2, sorted(p.name for p in (run / "wandb").iterdir())
