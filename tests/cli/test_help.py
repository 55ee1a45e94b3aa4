"""``--help`` of every Hydra app names the app and lists its own keys."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

APPS = [
    # (module, app, keys its help must list, keys of other apps it must not)
    ("fersuite.cli.train", "fersuite-train", ["optimized_metric:", "trainer_guard:"], []),
    ("fersuite.cli.eval", "fersuite-eval", ["ckpt_path:", "reports:"], ["optimizer:"]),
    ("fersuite.cli.data", "fersuite-data", ["samples_per_class:"], ["optimizer:", "trainer:"]),
    ("fersuite.cli.profile", "fersuite-profile", ["latency_runs:"], ["optimizer:", "data:"]),
    (
        "fersuite.cli.export",
        "fersuite-export",
        ["ckpt_path:", "  quantize:", "  calibration_samples:"],
        ["optimizer:", "trainer:"],
    ),
    # Not Hydra apps (fersuite.cli._args): every key with its default on its own line.
    (
        "fersuite.cli.predict",
        "fersuite-predict",
        ["ckpt_path: null", "inputs: null", "output: predictions.csv", "batch_size: 32"],
        ["optimizer:", "sweeps:"],
    ),
    (
        "fersuite.cli.report",
        "fersuite-report",
        ["sweeps: null", "out: null", "metric: test/acc", "strict: false"],
        ["optimizer:", "ckpt_path:"],
    ),
]


@pytest.mark.parametrize(("module", "app", "keys", "absent"), APPS)
def test_help_lists_the_apps_own_keys(module: str, app: str, keys: list, absent: list) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    res = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith(f"{app}: ")
    assert f"Usage: {app} " in res.stdout
    for key in keys:
        assert f"\n{key}" in res.stdout or f"  {key}" in res.stdout, key
    for key in absent:
        assert f"\n{key}" not in res.stdout, key
