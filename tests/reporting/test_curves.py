"""Learning curves and convergence figures of a sweep's groups, and chosen paired comparisons."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from fersuite.reporting.curves import convergence, read_curve
from fersuite.reporting.jobs import collect_sweep
from fersuite.reporting.seeds import group_jobs, paired_differences, select_group
from fersuite.reporting.sweep import write_sweep_report
from tests.reporting.helpers import assert_valid_png
from tests.reporting.test_sweep_report import _job, _metrics

# Per seed, val/acc at each epoch: "flat" plateaus, "rising" still climbs at the end.
CURVES = {
    "flat": [[0.3, 0.5, 0.60, 0.61, 0.60, 0.61], [0.2, 0.5, 0.58, 0.60, 0.61, 0.60]],
    "rising": [[0.1, 0.2, 0.30, 0.40, 0.50, 0.60], [0.1, 0.2, 0.25, 0.35, 0.45, 0.55]],
}


def _write_curve(job_dir: Path, values: list[float]) -> None:
    """The CSV logger's layout: step rows without val keys between per-epoch val rows."""
    (job_dir / "csv").mkdir(parents=True, exist_ok=True)
    with open(job_dir / "csv" / "metrics.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, ["epoch", "step", "train/loss_step", "val/acc"])
        w.writeheader()
        for e, v in enumerate(values):
            w.writerow({"epoch": e, "step": 10 * e + 5, "train/loss_step": 1.0})
            w.writerow({"epoch": e, "step": 10 * e + 9, "val/acc": v})


@pytest.fixture
def curve_sweep(tmp_path: Path) -> Path:
    sweep = tmp_path / "multiruns" / "curves"
    num = 0
    for arm, per_seed in CURVES.items():
        for seed, values in enumerate(per_seed):
            job = _job(sweep, num, [f"arm={arm}", f"seed={seed}"], {"arch": "mit_fer"},
                       _metrics(max(values), 2e7))  # fmt: skip
            _write_curve(job, values)
            num += 1
    return sweep


def test_read_curve_takes_one_value_per_epoch(curve_sweep: Path) -> None:
    assert read_curve(curve_sweep / "0", "val/acc") == CURVES["flat"][0]
    assert read_curve(curve_sweep / "0", "val/f1_macro") == []
    assert read_curve(curve_sweep / "missing", "val/acc") == []


def test_convergence_tells_flat_from_rising(curve_sweep: Path) -> None:
    flat, rising = group_jobs(collect_sweep([curve_sweep]))
    f, r = convergence(flat, "val/acc", window=3), convergence(rising, "val/acc", window=3)
    assert f is not None and r is not None
    # flat: best of the last 3 minus best before them, per seed: 0.61-0.60, 0.61-0.58
    assert f.late_gain == pytest.approx(np.mean([0.01, 0.03]))
    assert r.late_gain == pytest.approx(np.mean([0.60 - 0.30, 0.55 - 0.25]))
    # epochs numbered from 0, as Lightning and the checkpoint names number them
    assert f.best_epochs == (3, 4) and r.best_epochs == (5, 5)
    assert f.epochs == (6, 6) and f.n == 2
    assert convergence(flat, "val/loss") is None  # never logged


def test_report_writes_curves_and_convergence_table(curve_sweep: Path) -> None:
    report = write_sweep_report(curve_sweep)
    assert_valid_png(report.paths["curves"])
    md = report.paths["md"].read_text()
    assert "## Convergence (val/acc)" in md
    table = md.split("## Convergence (val/acc)")[1]
    line = next(x for x in table.splitlines() if x.startswith("| arm=rising"))
    assert "+0.3000" in line
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2:4] == ["6", "5"]  # whole epochs, from 0 like best-epoch005.ckpt
    flat = next(x for x in table.splitlines() if x.startswith("| arm=flat"))
    assert "| 3, 4 |" in flat
    assert [c.group for c in report.convergence] == ["arm=flat", "arm=rising"]


def test_chosen_pairs_compare_the_named_groups(curve_sweep: Path) -> None:
    groups = group_jobs(collect_sweep([curve_sweep]))
    flat, _ = groups
    diffs = paired_differences(groups, ["arm=rising vs arm=flat"])
    acc = next(d for d in diffs if d.column == "acc")
    assert acc.a == "arm=rising" and acc.b == "arm=flat"
    assert acc.diff.mean == pytest.approx(np.mean([0.61 - 0.60, 0.61 - 0.55]))
    # A token matches whole overrides only; no match and several matches are one-line errors.
    assert select_group(groups, "arm=flat") is flat
    with pytest.raises(ValueError, match="no group matched 'arm=fla'"):
        select_group(groups, "arm=fla")
    with pytest.raises(ValueError, match="2 groups matched 'arm=flat'"):
        select_group([flat, flat], "arm=flat")
    with pytest.raises(ValueError, match="expected \\[A, B\\]"):
        paired_differences(groups, [["arm=flat"]])


def test_report_lists_pairs_it_cannot_compare_yet(curve_sweep: Path) -> None:
    report = write_sweep_report(curve_sweep, pairs=[["arm=flat", "arm=later"]])
    md = report.paths["md"].read_text()
    assert "Paired differences of the chosen pairs" in md
    assert "not compared: pairs: no group matched 'arm=later'" in md
    assert report.paired == []


def test_fersuite_report_pairs_key(curve_sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fersuite.cli.report import main

    assert main([f"sweeps={curve_sweep}", 'pairs=["arm=rising vs arm=flat"]']) == 0
    assert "paired: acc: arm=flat - arm=rising" in capsys.readouterr().out
    assert main([f"sweeps={curve_sweep}", "pairs=[arm]"]) == 2
    assert "pairs=" in capsys.readouterr().err


def test_the_pareto_plot_labels_runs_as_the_learning_curves_do(
    curve_sweep: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fersuite.reporting.sweep as sweep

    seen: list[str] = []
    monkeypatch.setattr(
        sweep, "save_pareto_png", lambda points, *a, **k: seen.extend(p.label for p in points)
    )
    jobs = collect_sweep([curve_sweep])
    one_seed = [j for j in jobs if "seed=0" in j.overrides]  # one job per group: per-job plot
    groups = group_jobs(one_seed)
    sweep._pareto(
        one_seed, "test/acc", curve_sweep / "p.png", {id(j): g.name for g in groups for j in g.jobs}
    )
    assert sorted(seen) == sorted(g.name for g in groups) == ["arm=flat", "arm=rising"]
