"""``fersuite-train task=distill`` end to end, in-process (tiny data, one epoch)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from tests._helpers.apps import run_app
from tests.conftest import TINY, run_env
from tests.export.helpers import ZOO

pytestmark = pytest.mark.long(0.6)

#: The smallest student (what is tested is the distillation, not the student's size).
STUDENT = ["model=lightweight_cnn", "model.width_mult=0.25", "model.expansion_channels=32"]

#: TINY with fewer images: each split still has a teacher cache and a test.
SMALL = [
    *TINY,
    "data.train_size=32",
    "data.val_size=16",
    "data.test_size=16",
    "data.batch_size=16",
]

GAPS = [
    "test/gap_acc",
    "test/gap_f1_macro",
    "test/gap_valence_ccc",
    "test/gap_valence_rmse",
    "test/gap_arousal_ccc",
    "test/gap_arousal_rmse",
]


def _train(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    return run_app("fersuite-train", list(overrides), cwd=tmp_path, env=run_env(tmp_path))


def _run_dir(tmp_path: Path, task_name: str) -> Path:
    (run,) = sorted((tmp_path / "logs" / task_name / "runs").glob("*"))
    return run


def _check_student_checkpoint(ckpt: Path, arch: str) -> None:
    from fersuite.checkpoint import load_model_from_checkpoint

    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert raw["state_dict"] and all(k.startswith("net.") for k in raw["state_dict"])
    net, meta = load_model_from_checkpoint(ckpt)
    assert meta.model_cfg["arch"] == arch
    out = net(torch.zeros(1, meta.in_chans, meta.input_size, meta.input_size))
    assert out.expression.shape == (1, len(meta.class_names))


@pytest.mark.smoke
def test_distill_a_fersuite_checkpoint_with_cached_outputs(tmp_path: Path, fake_checkpoint) -> None:  # type: ignore[no-untyped-def]
    # a checkpoint in fersuite-train's format (untrained: what is tested is the distillation)
    teacher_ckpt = fake_checkpoint(ZOO["lightweight_cnn"])  # shared: read-only

    res = _train(
        tmp_path,
        *SMALL,
        "task=distill",
        f"distill.teacher_ckpt={teacher_ckpt}",
        "distill.teacher_outputs=cached",
        *STUDENT,
        "logger=csv",
        "~callbacks.reports",  # the run reports are the EmoNet test's (a live teacher)
        "task_name=student",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    run = _run_dir(tmp_path, "student")
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ["test/acc", "teacher/val/acc", "teacher/test/acc", "efficiency/params", *GAPS]:
        assert key in metrics, key
    assert metrics["test/gap_acc"] == pytest.approx(
        metrics["test/acc"] - metrics["teacher/test/acc"], abs=1e-6
    )
    # one cache file per split under paths.cache_dir, keyed by teacher and data
    caches = sorted((tmp_path / "cache" / "distill").glob("teacher-*.npz"))
    assert sorted(p.name.split("-")[1] for p in caches) == ["test", "train", "val"]
    _check_student_checkpoint(run / "checkpoints" / "last.ckpt", "lightweight_cnn")
    info = json.loads((run / "run_info.json").read_text())
    assert info["config"]["task"]["name"] == "distill"
    assert info["config"]["loss"]["_target_"] == "fersuite.losses.DistillationLoss"


@pytest.mark.smoke
def test_distill_emonet_on_an_affectnet_fixture(tmp_path: Path) -> None:
    from fersuite.models.emonet import EmoNet
    from tests.data.fixtures import write_affectnet

    root = tmp_path / "affectnet"
    write_affectnet(root, n=16, n_test=8)
    torch.manual_seed(0)
    weights = tmp_path / "emonet_8_random.pth"
    torch.save(EmoNet(num_expressions=8).state_dict(), weights)

    res = _train(
        tmp_path,
        "data=affectnet",
        f"data.root={root}",
        "data.val_fraction=0.5",
        "data.batch_size=8",
        "data.eval_batch_size=8",
        "data.num_workers=0",
        "trainer.max_epochs=1",
        "task=distill",
        "distill.teacher=emonet",
        f"distill.teacher_weights={weights}",
        "distill.teacher_input_size=64",  # the smallest EmoNet input (official: 256)
        *STUDENT,
        "logger=none",
        "callbacks.efficiency.latency_runs=2",
        "callbacks.efficiency.latency_warmup=1",
        "callbacks.efficiency.throughput_batch=2",
        "callbacks.efficiency.throughput_runs=1",
        "callbacks.efficiency.warmup_batches=0",
        "task_name=emonet_kd",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    run = _run_dir(tmp_path, "emonet_kd")
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ["teacher/test/acc", "teacher/test/valence_ccc", "teacher/val/acc", *GAPS]:
        assert key in metrics, key
    assert 0.0 <= metrics["teacher/test/acc"] <= 1.0
    # the student is profiled, not the 17-GMAC teacher
    assert metrics["efficiency/macs"] < 1e9
    _check_student_checkpoint(run / "checkpoints" / "last.ckpt", "lightweight_cnn")
