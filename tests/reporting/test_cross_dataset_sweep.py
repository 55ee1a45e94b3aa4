"""A sweep report gathers its jobs' cross-dataset matrices (read as someone else's files)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from fersuite.errors import UntrustedFileError
from fersuite.reporting.cross_dataset import (
    COLUMNS,
    SWEEP_COLUMNS,
    matrix,
    matrix_markdown,
    read_cross_csv,
    write_cross_csv,
)
from fersuite.reporting.sweep import write_sweep_report
from tests.reporting.helpers import assert_valid_png


def _cells(ckpt: str, acc_a: float, acc_b: float) -> list[dict[str, object]]:
    return [
        {"checkpoint": ckpt, "dataset": "synthetic", "n": 40, "acc": acc_a, "balanced_acc": acc_a,
         "f1_macro": acc_a / 2, "valence_ccc": 0.25, "arousal_ccc": -0.1},
        {"checkpoint": ckpt, "dataset": "synthetic_b", "n": 30, "acc": acc_b,
         "balanced_acc": acc_b, "f1_macro": acc_b / 2},
    ]  # fmt: skip


def _job(sweep: Path, num: int, overrides: list[str], cells: list[dict[str, object]]) -> Path:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"task_name": "eval"}))
    (job / "metrics.json").write_text(json.dumps({"test/acc": 0.5}))
    write_cross_csv(job / "cross_dataset.csv", cells)
    return job


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_sweep_gathers_the_matrices_and_averages_over_seeds(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    _job(sweep, 0, ["seed=1", "ckpt_paths=[s1.ckpt]"], _cells("s1.ckpt", 0.5, 0.25))
    _job(sweep, 1, ["seed=2", "ckpt_paths=[s2.ckpt]"], _cells("s2.ckpt", 0.75, 0.5))
    report = write_sweep_report(sweep)
    assert report.cross_refused == []
    rows = _rows(sweep / "cross_dataset.csv")
    assert list(rows[0]) == list(SWEEP_COLUMNS)
    assert [(r["job"], r["seed"], r["checkpoint"], r["dataset"]) for r in rows] == [
        ("0", "1", "s1.ckpt", "synthetic"),
        ("0", "1", "s1.ckpt", "synthetic_b"),
        ("1", "2", "s2.ckpt", "synthetic"),
        ("1", "2", "s2.ckpt", "synthetic_b"),
    ]
    assert [float(r["acc"]) for r in rows] == [0.5, 0.25, 0.75, 0.5]
    assert rows[1]["valence_ccc"] == ""  # synthetic_b has no valence/arousal
    # One group (the seeds' checkpoints differ, nothing else does): the mean per test set.
    assert {r["group"] for r in rows} == {""}
    assert report.paths["cross_png"] == sweep / "cross_dataset.png"
    assert_valid_png(sweep / "cross_dataset.png")
    assert "cross_dataset.png" in (sweep / "report.md").read_text()


def test_the_mean_of_a_matrix_per_row_and_test_set() -> None:
    cells = [
        {"row": "x", "dataset": "a", "acc": 0.5},
        {"row": "x", "dataset": "a", "acc": 0.75},
        {"row": "x", "dataset": "b", "acc": None},  # a refused cell: no figure
        {"row": "y", "dataset": "b", "acc": 0.25},
    ]
    rows, cols, values = matrix(cells, row_key="row")
    assert rows == ["x", "y"] and cols == ["a", "b"]
    assert values[0, 0] == pytest.approx(0.625)
    assert np.isnan(values[0, 1]) and np.isnan(values[1, 0])
    assert values[1, 1] == 0.25


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("m.ckpt,synthetic,40,1.5,0.5,0.5,,,", r"acc='1\.5'; expected a finite number in \[0, 1\]"),
        ("m.ckpt,synthetic,40,nan,0.5,0.5,,,", r"acc='nan'; expected a finite number"),
        ("m.ckpt,synthetic,40,0.5,0.5,0.5,-2,,", r"valence_ccc='-2'; expected .* \[-1, 1\]"),
        ("m.ckpt,synthetic,-3,0.5,0.5,0.5,,,", r"n='-3'; expected a whole number"),
        ("m.ckpt,synthetic,40,0.5,0.5,x,,,", r"f1_macro='x' is not a number"),
        ("m.ckpt,synthetic,40,0.5", r"4 fields; expected 9"),
        ("m.ckpt,,40,0.5,0.5,0.5,,,", r"checkpoint and dataset must be named"),
    ],
)
def test_a_bad_matrix_file_is_one_line_naming_it(tmp_path: Path, line: str, match: str) -> None:
    bad = tmp_path / "cross_dataset.csv"
    bad.write_text(",".join(COLUMNS) + "\n" + line + "\n")
    with pytest.raises(UntrustedFileError, match=match) as err:
        read_cross_csv(bad)
    assert str(err.value).startswith(f"{bad}: line 2: ")
    assert "\n" not in str(err.value)


def test_a_bad_header_or_size_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "cross_dataset.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(UntrustedFileError, match="the header is not checkpoint,dataset"):
        read_cross_csv(bad)
    bad.write_bytes(b"x" * (2 << 20))
    with pytest.raises(UntrustedFileError, match="at most 1 MiB"):
        read_cross_csv(bad)


def test_sweep_names_a_bad_matrix_in_one_line_and_gathers_the_rest(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    _job(sweep, 0, ["seed=1"], _cells("s1.ckpt", 0.5, 0.25))
    bad = _job(sweep, 1, ["seed=2"], _cells("s2.ckpt", 0.75, 0.5)) / "cross_dataset.csv"
    bad.write_text(bad.read_text().replace("0.75", "inf"))
    report = write_sweep_report(sweep)
    assert len(report.cross_refused) == 1
    (line,) = report.cross_refused
    assert line.startswith(f"{bad}: line 2: acc='inf'")
    assert "\n" not in line
    assert f"not gathered: {line}" in (sweep / "report.md").read_text()
    assert [r["job"] for r in _rows(sweep / "cross_dataset.csv")] == ["0", "0"]


def test_the_markdown_matrix_gives_mean_and_t_interval_per_cell() -> None:
    accs = [0.5, 0.75, 0.625]
    cells = [{"row": "x", "dataset": "a", "acc": v} for v in accs]
    cells += [
        {"row": "x", "dataset": "b", "acc": None},  # refused: no figure
        {"row": "y", "dataset": "b", "acc": 0.25},  # one seed: no interval
    ]
    table = matrix_markdown(cells, "row", "acc").splitlines()
    assert table[0] == "| trained on \\ tested on | `a` | `b` |"
    low, high = stats.t.interval(0.95, len(accs) - 1, loc=np.mean(accs), scale=stats.sem(accs))
    assert table[2] == f"| `x` | {np.mean(accs):.3f} ± {(high - low) / 2:.3f} (n=3) | – |"
    assert table[3] == "| `y` | – | 0.250 (n=1) |"


def test_the_sweep_report_quotes_the_matrix_of_its_groups(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    _job(sweep, 0, ["data=a", "seed=1"], _cells("a1.ckpt", 0.5, 0.25))
    _job(sweep, 1, ["data=a", "seed=2"], _cells("a2.ckpt", 0.75, 0.5))
    _job(sweep, 2, ["data=b", "seed=1"], _cells("b1.ckpt", 0.125, 0.875))
    md = (write_sweep_report(sweep).paths["md"]).read_text()
    section = md[md.index("## Cross-dataset matrices") :]
    assert "Accuracy (mean ± 95% half-width over the seeds, n seeds):" in section
    assert "| `data=a` | 0.625 ± 1.588 (n=2) | 0.375 ± 1.588 (n=2) |" in section
    assert "| `data=b` | 0.125 (n=1) | 0.875 (n=1) |" in section
    assert "Balanced accuracy" in section
