"""Seeds aggregated: grouping by overrides without seed, Student-t intervals checked against
scipy's own interval, paired differences, report_grouped.csv and the grouped Pareto plot."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from fersuite.reporting.jobs import collect_sweep
from fersuite.reporting.seeds import mean_ci, paired_difference
from fersuite.reporting.sweep import write_sweep_report
from tests.reporting.helpers import assert_valid_png
from tests.reporting.test_sweep_report import _job, _metrics

ACC = {"mit_fer": [0.60, 0.64, 0.59], "lightweight_cnn": [0.55, 0.61, 0.54]}


@pytest.fixture
def seeded_sweep(tmp_path: Path) -> Path:
    sweep = tmp_path / "multiruns" / "seeds"
    num = 0
    for model, accs in ACC.items():
        macs = 2.5e7 if model == "mit_fer" else 3.8e7
        for seed, acc in enumerate(accs):
            _job(sweep, num, [f"model={model}", f"seed={seed}"], {"arch": model},
                 _metrics(acc, macs))  # fmt: skip
            num += 1
    _job(sweep, num, ["model=mit_fer", "seed=9"], {"arch": "mit_fer"}, None)  # failed
    return sweep


def test_mean_ci_matches_scipy_interval() -> None:
    vals = [0.60, 0.64, 0.59, 0.62]
    got = mean_ci(vals)
    lo, hi = stats.t.interval(0.95, len(vals) - 1, loc=np.mean(vals), scale=stats.sem(vals))
    assert got.mean == pytest.approx(np.mean(vals))
    assert got.std == pytest.approx(np.std(vals, ddof=1))
    assert got.mean - got.ci95 == pytest.approx(lo) and got.mean + got.ci95 == pytest.approx(hi)
    one = mean_ci([0.5])
    assert one.n == 1 and math.isnan(one.ci95)


def test_grouped_csv_one_row_per_config(seeded_sweep: Path) -> None:
    report = write_sweep_report(seeded_sweep)
    with open(report.paths["grouped"]) as fh:
        rows = {r["group"]: r for r in csv.DictReader(fh)}
    assert set(rows) == {"model=mit_fer", "model=lightweight_cnn"}
    mit = rows["model=mit_fer"]
    assert mit["n"] == "3" and mit["seeds"] == "0 1 2"  # the failed seed 9 is not counted
    expected = mean_ci(ACC["mit_fer"])
    assert float(mit["acc_mean"]) == pytest.approx(expected.mean)
    assert float(mit["acc_std"]) == pytest.approx(expected.std)
    assert float(mit["acc_ci95"]) == pytest.approx(expected.ci95)
    assert float(mit["macs_mean"]) == pytest.approx(2.5e7) and float(mit["macs_std"]) == 0
    # Per-seed rows stay in report.csv.
    with open(report.paths["csv"]) as fh:
        assert len(list(csv.DictReader(fh))) == 7
    md = report.paths["md"].read_text()
    assert "## Seeds aggregated" in md and "± " in md
    assert_valid_png(report.paths["pareto"])


def test_paired_difference_uses_shared_seeds(seeded_sweep: Path) -> None:
    jobs = collect_sweep([seeded_sweep])
    from fersuite.reporting.seeds import group_jobs

    mit, cnn = group_jobs(jobs)
    d = paired_difference(mit, cnn, "acc")
    diffs = np.subtract(ACC["lightweight_cnn"], ACC["mit_fer"])
    assert d.seeds == ("0", "1", "2")
    assert d.diff.mean == pytest.approx(diffs.mean())
    _, hi = stats.t.interval(0.95, 2, loc=diffs.mean(), scale=stats.sem(diffs))
    assert d.diff.mean + d.diff.ci95 == pytest.approx(hi)
    assert "interval excludes 0 (uncorrected)" in str(d)  # -0.043 ± 0.014
    md = write_sweep_report(seeded_sweep).paths["md"].read_text()
    assert "Paired differences against `model=mit_fer`" in md


def test_pareto_plot_reads_at_a_glance(tmp_path: Path) -> None:
    """Labels never overlap or leave the image, the legend covers no point, MACs in M/G."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    import fersuite.reporting.plots as plots
    from fersuite.reporting.plots import ParetoPoint

    captured: list[Figure] = []
    save = plots._save
    plots._save = lambda fig, path, dpi=120: (captured.append(fig), save(fig, path, dpi))[1]
    try:
        points = [
            ParetoPoint(2.5e7, 0.60, "mit_fer fusion_stride=8 (n=3)", 0.02),
            ParetoPoint(2.6e7, 0.601, "mit_fer last stage only (n=3)", 0.03),
            ParetoPoint(3.8e7, 0.55, "lightweight_cnn (n=3)", 0.01),
            ParetoPoint(1.82e9, 0.66, "resnet18 at the right edge (n=3)", 0.02),
            ParetoPoint(3.1e8, 0.62, "mobilenetv2_100 (n=3)", 0.02),
        ]
        plots.save_pareto_png(points, tmp_path / "p.png")
    finally:
        plots._save = save
    fig = captured[0]
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    ax = fig.axes[0]
    texts = [t for t in ax.texts if t.get_text().endswith(")")]
    assert len(texts) == len(points)
    boxes = [t.get_window_extent(renderer) for t in texts]
    for i, a in enumerate(boxes):
        assert fig.bbox.contains(a.x0, a.y0) and fig.bbox.contains(a.x1, a.y1), texts[i]
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b), (texts[i].get_text(), "overlaps another label")
    legend = fig.legends[0].get_window_extent(renderer)
    for p in points:
        x, y = ax.transData.transform((p.cost, p.quality))
        assert not legend.contains(x, y)
    ticks = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert any(t.endswith(" M") for t in ticks) and any(t.endswith(" G") for t in ticks), ticks
    assert not any("10^" in t or "times" in t for t in ticks)


def test_fersuite_report_prints_groups_and_paired_differences(
    seeded_sweep: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fersuite.cli.report import main

    assert main([f"sweeps={seeded_sweep}"]) == 0
    out = capsys.readouterr().out
    assert "seeds aggregated" in out
    assert "paired: acc: model=lightweight_cnn - model=mit_fer = -0.0433" in out
