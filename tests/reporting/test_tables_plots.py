"""Per-class tables, Pareto fronts and the PNG figures of run and sweep reports."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fersuite.reporting import (
    ParetoPoint,
    VAPairs,
    ccc,
    markdown_table,
    pareto_front,
    per_class_rows,
    save_confusion_png,
    save_pareto_png,
    save_va_scatter_png,
    write_csv,
    write_run_report,
)
from tests.reporting.helpers import assert_valid_png

NAMES = ("neutral", "happy", "sad")
# rows = true class, columns = predicted class
CM = torch.tensor([[5, 1, 0], [2, 6, 0], [0, 0, 0]])


def test_per_class_rows_match_hand_computed_figures() -> None:
    rows = per_class_rows(CM, NAMES)
    assert [r["class"] for r in rows] == list(NAMES)
    neutral, happy, sad = rows
    assert (neutral["support"], neutral["correct"], neutral["predicted"]) == (6, 5, 7)
    assert neutral["accuracy"] == pytest.approx(5 / 6)
    assert neutral["precision"] == pytest.approx(5 / 7)
    assert neutral["f1"] == pytest.approx(2 * (5 / 6) * (5 / 7) / (5 / 6 + 5 / 7))
    assert happy["accuracy"] == pytest.approx(6 / 8)
    assert happy["precision"] == pytest.approx(6 / 7)
    # no sample and no prediction of "sad": undefined, not a misleading 0
    assert sad["support"] == 0 and math.isnan(sad["accuracy"]) and math.isnan(sad["f1"])


def test_per_class_rows_reject_a_matrix_of_the_wrong_size() -> None:
    with pytest.raises(ValueError, match=r"shape \(3, 3\); expected \(2, 2\)"):
        per_class_rows(CM, NAMES[:2])


def test_csv_writes_nan_as_empty_and_keeps_column_order(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    write_csv(path, per_class_rows(CM, NAMES), ["class", "accuracy", "support"])
    with open(path) as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["class", "accuracy", "support"]
    assert rows[3] == ["sad", "", "0"]
    assert float(rows[1][1]) == pytest.approx(5 / 6, rel=1e-5)
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left behind


def test_markdown_table_formats_and_escapes() -> None:
    text = markdown_table(
        [{"a": 0.123456, "b": "x|y"}, {"a": None, "b": float("nan")}],
        ["a", "b"],
        headers={"a": "A"},
        formats={"a": lambda v: f"{v:.2f}"},
    )
    lines = text.strip().splitlines()
    assert lines[0] == "| A | b |"
    assert lines[2] == "| 0.12 | x\\|y |"
    assert lines[3] == "| - | - |"


@pytest.mark.parametrize(
    ("costs", "qualities", "front"),
    [
        ([1, 2, 3, 4], [0.5, 0.4, 0.7, 0.7], [0, 2]),  # 1 dominated by 0; 3 ties 2 at more cost
        ([3, 1, 2], [0.9, 0.1, 0.5], [1, 2, 0]),  # all on the front, ordered by cost
        ([1, 1, 2], [0.2, 0.6, 0.6], [1]),  # equal cost: the better one only
        ([1, float("nan"), 3], [0.2, 0.9, 0.1], [0]),  # NaN never on the front
    ],
)
def test_pareto_front(costs: list[float], qualities: list[float], front: list[int]) -> None:
    assert pareto_front(costs, qualities) == front


def test_ccc_of_identical_and_shifted_series() -> None:
    x = np.linspace(-1, 1, 50)
    assert ccc(x, x) == pytest.approx(1.0)
    assert ccc(x, x + 0.5) < 1.0  # a bias lowers CCC (unlike Pearson correlation)
    assert ccc(-x, x) == pytest.approx(-1.0)
    assert math.isnan(ccc([0.1], [0.2]))


def test_figures_are_valid_pngs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    t = rng.uniform(-1, 1, 40)
    assert_valid_png(save_confusion_png(CM, NAMES, tmp_path / "cm.png"))
    assert_valid_png(save_va_scatter_png(t + 0.1, t, -t, t, tmp_path / "va.png"))
    points = [ParetoPoint(3e8, 0.6, "a"), ParetoPoint(2e9, 0.7, "b"), ParetoPoint(1e9, 0.5, "c")]
    assert_valid_png(save_pareto_png(points, tmp_path / "pareto.png"))


def test_pareto_plot_without_usable_points_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no point with a positive cost"):
        save_pareto_png([ParetoPoint(0.0, 0.5, "x")], tmp_path / "p.png")
    assert not (tmp_path / "p.png").exists()


def test_run_report_writes_every_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    t = rng.uniform(-1, 1, 30)
    va = VAPairs(t, t, t * 0.5, t)
    report = write_run_report(tmp_path, "test", CM, NAMES, va)
    assert report.confusion_png == tmp_path / "confusion_test.png"
    assert report.per_class_csv == tmp_path / "per_class_test.csv"
    assert report.va_png == tmp_path / "va_test.png"
    for png in (report.confusion_png, report.va_png):
        assert_valid_png(png)
    assert report.per_class_csv.read_text().splitlines()[0].startswith("class,support,correct")
    # without VA pairs: no scatter
    assert write_run_report(tmp_path / "nova", "val", CM, NAMES).va_png is None
    assert not (tmp_path / "nova" / "va_val.png").exists()
