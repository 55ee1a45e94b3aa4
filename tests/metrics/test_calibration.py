"""val/ece and test/ece: the expected calibration error equals a hand computation; the
reliability bins behind the diagram agree with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fersuite.metrics.affect import ECE_BINS, AffectMetrics
from fersuite.monitoring import monitor_direction
from fersuite.reporting.run_report import write_run_report
from fersuite.types import AffectOutput
from tests.reporting.helpers import assert_valid_png


def _hand_ece(logits: np.ndarray, target: np.ndarray, bins: int) -> float:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    conf, pred = p.max(axis=1), p.argmax(axis=1)
    correct = (pred == target).astype(np.float64)
    ece = 0.0
    for i in range(bins):
        lo, hi = i / bins, (i + 1) / bins
        in_bin = (conf > lo) & (conf <= hi) if i else (conf >= lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return ece


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(n, 4, generator=g) * 2, torch.randint(0, 4, (n,), generator=g))
        for n in (17, 23)
    ]


def test_ece_equals_a_hand_computation() -> None:
    metrics = AffectMetrics(num_classes=4, has_va=False)
    for logits, target in _batches():
        metrics.update(AffectOutput(logits, torch.zeros(len(logits)), torch.zeros(len(logits))),
                       {"expression": target})  # fmt: skip
    logits = torch.cat([b[0] for b in _batches()]).double().numpy()
    target = torch.cat([b[1] for b in _batches()]).numpy()
    expected = _hand_ece(logits, target, ECE_BINS)
    assert expected > 0.05  # a miscalibrated random model: the test can fail
    values = metrics.compute()
    assert float(values["ece"]) == pytest.approx(expected, abs=1e-6)

    bins = metrics.reliability()
    assert bins is not None and bins.shape == (ECE_BINS, 3)
    count, conf, acc = bins.double().unbind(1)
    assert int(count.sum()) == len(target)
    assert float((count * (acc - conf).abs()).sum() / count.sum()) == pytest.approx(
        expected, abs=1e-6
    )


def test_ece_only_where_evaluated_and_keys_kept() -> None:
    train = AffectMetrics(num_classes=4, has_va=True, confusion=False)
    logits, target = _batches()[0]
    out = AffectOutput(logits, torch.zeros(len(logits)), torch.zeros(len(logits)))
    train.update(out, {"expression": target})
    assert "ece" not in train.compute() and train.reliability() is None
    assert monitor_direction("val/ece") == "min"


def test_reliability_diagram_png_in_the_run_report(tmp_path: Path) -> None:
    metrics = AffectMetrics(num_classes=4, has_va=False)
    for logits, target in _batches():
        metrics.update(AffectOutput(logits, torch.zeros(len(logits)), torch.zeros(len(logits))),
                       {"expression": target})  # fmt: skip
    cm = metrics.confusion()
    report = write_run_report(
        tmp_path, "test", cm, ("a", "b", "c", "d"), None, metrics.reliability()
    )
    assert report.reliability_png == tmp_path / "reliability_test.png"
    assert_valid_png(report.reliability_png)
    assert report.paths()["reliability"] == report.reliability_png
