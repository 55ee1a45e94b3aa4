"""Smoke runs of fersuite-train (few steps, tiny data): the console script in a subprocess
once, the rest in-process (tests/_helpers/apps.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests._helpers.apps import run_app
from tests.conftest import TINY, run_env

pytestmark = pytest.mark.long(0.9)

REQUIRED = [
    "test/acc",
    "test/f1_macro",
    "test/valence_ccc",
    "test/arousal_ccc",
    "test/valence_rmse",
    "test/arousal_rmse",
    "efficiency/params",
    "efficiency/macs",
    "efficiency/latency_ms_b1",
    "efficiency/throughput_ips",
    "efficiency/train_ips",
]


#: With TINY: the fewest samples that still give training the 2 batches that
#: efficiency/train_ips needs (its clock starts after TINY's 1 warm-up batch), and
#: validation and test a batch each. Smoke runs: what is tested is the run, not the learning.
SMALL = [
    "data.train_size=32",
    "data.val_size=16",
    "data.test_size=16",
    "data.batch_size=16",
]

#: No profiling or reports, the smallest model: for the in-process runs whose subject is not
#: the default config.
SMALLEST = [
    "~callbacks.efficiency",
    "~callbacks.reports",
    "model=lightweight_cnn",
    "model.width_mult=0.25",
    "model.expansion_channels=32",
]


def _train(
    tmp_path: Path, *overrides: str, script: bool = False, module_entry: bool = False
) -> subprocess.CompletedProcess[str]:
    """fersuite-train in-process (``module_entry``: as ``python -m fersuite.cli.train``), or
    the console script in a subprocess (``script``)."""
    flags = [o for o in overrides if o.startswith("--")]
    rest = [o for o in overrides if not o.startswith("--")]
    if not script:
        args = [*flags, *TINY, *SMALL, *rest]
        env = run_env(tmp_path)
        return run_app("fersuite-train", args, tmp_path, env, module_entry=module_entry)
    return subprocess.run(
        [str(Path(sys.executable).parent / "fersuite-train"), *flags, *TINY, *SMALL, *rest],
        cwd=tmp_path,
        env=run_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _run_dirs(tmp_path: Path, kind: str = "runs") -> list[Path]:
    return sorted((tmp_path / "logs" / "train" / kind).glob("*"))


@pytest.mark.smoke
@pytest.mark.subprocess
def test_default_config_trains_as_console_script(tmp_path: Path) -> None:
    res = _train(tmp_path, script=True)
    assert res.returncode == 0, res.stderr[-3000:]
    (run,) = _run_dirs(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    missing = [k for k in REQUIRED if k not in metrics]
    assert not missing, missing
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert metrics["efficiency/params"] > 1e5
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "checkpoints").glob("best-*.ckpt"))
    assert list((run / "wandb").glob("offline-run-*"))
    assert (run / "run_info.json").is_file()
    assert "fersuite run summary" in res.stdout
    assert "test/acc" in res.stdout


@pytest.mark.smoke
def test_module_entry_without_loggers(tmp_path: Path) -> None:
    # the smallest model, no profiling or reports: what is tested is the entry point and
    # logger=none (the default callbacks are the console-script test's)
    res = _train(tmp_path, "logger=none", "loss=ce", *SMALLEST, module_entry=True)
    assert res.returncode == 0, res.stderr[-3000:]
    (run,) = _run_dirs(tmp_path)
    assert not (run / "wandb").exists()
    metrics = json.loads((run / "metrics.json").read_text())
    assert "test/acc" in metrics


@pytest.fixture(scope="module")
def multirun(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sweep dir of one 2-job multirun (mobilenetv2_100, resnet18), run once: the
    multirun test checks its jobs, the checkpoint test rebuilds resnet18 from job 1's."""
    root = tmp_path_factory.mktemp("multirun")
    # ~callbacks.reports/efficiency: the run reports (plots) and the profiling are the
    # console-script test's; the sweep report is written once, at the end of the multirun (it
    # never fails a sweep; tests/reporting/test_sweep_report.py tests it)
    res = _train(
        root,
        "--multirun",
        "model.name=mobilenetv2_100,resnet18",
        "logger=csv",
        "~callbacks.reports",
        "~callbacks.efficiency",
        "hydra.callbacks.sweep_report.after_each_job=false",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    (sweep,) = _run_dirs(root, "multiruns")
    return sweep


@pytest.mark.smoke
def test_multirun_runs_every_job(multirun: Path) -> None:
    jobs = sorted(p for p in multirun.iterdir() if p.is_dir() and p.name.isdigit())
    assert [j.name for j in jobs] == ["0", "1"]
    for job in jobs:
        assert (job / "metrics.json").is_file()


@pytest.mark.smoke
def test_checkpoint_rebuilds_the_model_safely(multirun: Path) -> None:
    import torch
    import yaml

    from fersuite.checkpoint import load_model_from_checkpoint

    run = multirun / "1"  # model.name=resnet18, not the default model
    overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    assert "model.name=resnet18" in overrides, overrides
    net, meta = load_model_from_checkpoint(run / "checkpoints" / "last.ckpt")
    assert meta.class_names[0] == "neutral" and len(meta.class_names) == 8
    assert meta.input_size == 48 and meta.in_chans == 1
    out = net(torch.zeros(2, 1, 48, 48))
    assert out.expression.shape == (2, 8)
