"""The sweep report carries each job's test/balanced_acc: report.csv, report_grouped.csv (mean
over seeds) and report.md (per job and per group)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from fersuite.reporting.sweep import write_sweep_report
from tests.reporting.test_sweep_report import _job, _metrics

BALANCED = {"mit_fer": [0.41, 0.47], "lightweight_cnn": [0.33, 0.38]}


def test_balanced_accuracy_is_in_every_report_table(tmp_path: Path) -> None:
    sweep = tmp_path / "multiruns" / "seeds"
    num = 0
    for model, values in BALANCED.items():
        for seed, balanced in enumerate(values):
            metrics = {**_metrics(0.6, 2.5e7), "test/balanced_acc": balanced}
            _job(sweep, num, [f"model={model}", f"seed={seed}"], {"arch": model}, metrics)
            num += 1
    report = write_sweep_report(sweep)

    with open(sweep / "report.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    got = sorted(float(r["balanced_acc"]) for r in rows)
    assert got == sorted(v for vs in BALANCED.values() for v in vs)

    with open(sweep / "report_grouped.csv", newline="") as fh:
        grouped = {r["group"]: r for r in csv.DictReader(fh)}
    for model, values in BALANCED.items():
        (row,) = [r for g, r in grouped.items() if f"model={model}" in g]
        assert float(row["balanced_acc_mean"]) == pytest.approx(sum(values) / len(values))

    md = (sweep / "report.md").read_text()
    assert md.count("balanced acc.") >= 2  # the jobs' table and the groups' table
    assert "0.4700" in md and "0.3300" in md
    assert any(d.column == "balanced_acc" for d in report.paired)
