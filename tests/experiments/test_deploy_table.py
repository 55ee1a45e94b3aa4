"""experiments/deploy/run.py: the README table and target verdicts from fake measurements."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "deploy_run", REPO / "experiments" / "deploy" / "run.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module
    spec.loader.exec_module(module)
    return module


def _metrics(acc: float, ccc: float) -> dict[str, float]:
    return {
        "test/acc": acc,
        "test/f1_macro": acc - 0.05,
        "test/valence_ccc": ccc,
        "test/arousal_ccc": ccc,
    }


def test_table_marks_each_target_met_or_missed(bench: ModuleType, tmp_path: Path) -> None:
    row = bench.Row
    rows = [
        row("cnn_48", "eager", "best.ckpt", 2_000_000, _metrics(0.40, 0.50), 1.0, 8.0),
        row("cnn_48", "onnx", "model.onnx", 2_000_000, _metrics(0.40, 0.50), 1.0, 2.0),
        # int8: accuracy 5 points down (missed), CCC 0.01 down (met), 0.25x size (met),
        # 1.8 / 2.0 = 0.9x latency (missed, a CNN)
        row("cnn_48", "onnx-int8", "model.onnx", 500_000, _metrics(0.35, 0.49), 0.8, 1.8),
        row("cnn_48", "executorch", "model.pte", 2_000_000, _metrics(0.40, 0.50), 1.0, 3.0),
        row("cnn_48", "executorch-int8", failure="export failed (exit 1): top-1 | 0.5"),
    ]
    cells = {r.variant: bench._targets_cell(bench.targets(r, rows, True)) for r in rows}
    assert cells["onnx-int8"] == (
        "acc **missed** (-5.0 pt); CCC met (-0.010); size met (0.25x); "
        "latency **missed** (0.90x onnx fp32)"
    )
    assert cells["executorch"] == "latency met (0.38x eager)"
    assert cells["eager"] == cells["onnx"] == cells["executorch-int8"] == "–"
    # not a CNN: no int8 latency target
    assert "latency" not in bench._targets_cell(bench.targets(rows[2], rows, False))

    text = bench.render_readme(
        {"cnn_48": rows},
        {"mbv2_224": "fersuite-train failed (exit 1): boom"},
        "PYTHONPATH=src .venv/bin/python experiments/deploy/run.py --quick",
        {
            "date": "2026-12-05",
            "epochs": 1,
            "train_size": 10,
            "test_size": 5,
            "epochs_large": 1,
            "train_size_large": 4,
            "test_size_large": 2,
            "latency_runs": 50,
            "latency_warmup": 10,
            "calibration_samples": 16,
            "min_agreement": 0.0,
            "max_accuracy_drop": 1.0,
        },
        {"cpu": "test cpu", "cores": 2, "vnni": False, "versions": {"torch": "2.14.1"}},
    )
    lines = text.splitlines()
    assert lines[5] == "PYTHONPATH=src .venv/bin/python experiments/deploy/run.py --quick"
    table = [ln for ln in lines if ln.startswith("| ")]
    assert len(table) == 1 + len(rows)  # header + one row per format
    assert all(ln.count("|") == 12 for ln in table)  # the failure's "|" is escaped
    assert (
        "| ONNX int8 | model.onnx | 488 | 0.350 | 0.300 | 0.490 | 0.490 | 0.800 | 1.80 | 0.23 |"
        in (text)
    )
    assert "export failed (exit 1): top-1 / 0.5" in text
    assert "not measured: fersuite-train failed (exit 1): boom" in text
    assert "- lightweight CNN, 48x48 gray, ONNX int8: acc missed (-5.0 pt): " in text
