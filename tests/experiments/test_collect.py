"""experiments/studies/collect.py: the sweep's comparisons (per-sample tests included) are kept
beside the seed-level table that verdicts.py rebuilds from report.csv."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from fersuite.reporting.jobs import REPORT_COLUMNS
from tests.conftest import REPO

STUDIES = REPO / "experiments" / "studies"


@pytest.fixture(scope="module")
def collect() -> ModuleType:
    sys.path.insert(0, str(STUDIES))  # collect.py imports verdicts.py beside it, as when run
    try:
        spec = importlib.util.spec_from_file_location("study_collect", STUDIES / "collect.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(STUDIES))
    return module


def _results(tmp_path: Path, acc_of_last: str = "") -> Path:
    """A sweep report as write_sweep_report leaves it: width 1.0 is 0.15 above width 0.5 in
    every seed (a small spread per seed), MobileNetV2 arms close to their CNN."""
    out = tmp_path / "results"
    out.mkdir()
    base = {"lightweight_cnn_050": 0.30, "mobilenetv2_100": 0.30, "lightweight_cnn": 0.45,
            "mobilenetv2_140": 0.44}  # fmt: skip
    with (out / "report.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=REPORT_COLUMNS)
        writer.writeheader()
        for arm, acc in base.items():
            for seed, jitter in enumerate([0.01, -0.02, 0.0, 0.02, -0.01]):
                value = acc + jitter + (0.003 * seed if arm.startswith("mobilenet") else 0.0)
                writer.writerow({c: "" for c in REPORT_COLUMNS} | {
                    "job": f"{arm}-{seed}", "status": "ok", "model": arm,
                    "overrides": f"arm={arm} seed={seed}", "acc": value,
                    "f1_macro": value, "balanced_acc": value, "valence_ccc": 0.2,
                    "arousal_ccc": 0.4 + jitter,
                })  # fmt: skip
        if acc_of_last:
            writer.writerow({c: "" for c in REPORT_COLUMNS} | {
                "job": "x", "status": "ok", "model": "m",
                "overrides": "arm=lightweight_cnn seed=9", "acc": acc_of_last,
            })  # fmt: skip
    (out / "report_comparisons.csv").write_text("the sweep's table, per-sample rows included\n")
    (out / "report.md").write_text(
        "# Sweep report\n\nThe table. All rows: `report_comparisons.csv`.\n"
    )
    return out


def test_sweep_table_is_kept_and_the_seed_level_table_rebuilt(
    collect: ModuleType, tmp_path: Path
) -> None:
    out = _results(tmp_path)
    assert collect.split_comparisons(out, "study_lightweight") is True
    per_sample = (out / "report_comparisons_per_sample.csv").read_text()
    assert per_sample.startswith("the sweep's table")
    with (out / "report_comparisons.csv").open(newline="") as fh:
        rows = {(r["a"], r["b"], r["metric"]): r for r in csv.DictReader(fh)}
    assert len(rows) == 15  # the preset's three pairs x five metrics
    width = rows[("arm=lightweight_cnn_050", "arm=lightweight_cnn", "acc")]
    assert width["verdict"] == "better" and float(width["diff"]) == pytest.approx(0.15)
    md = (out / "report.md").read_text()
    assert "All rows: `report_comparisons_per_sample.csv`" in md
    assert "`report_comparisons.csv`." not in md
    assert (out / "comparisons.md").read_text().startswith("# Comparisons: study_lightweight")


def test_a_report_md_in_other_words_gets_the_pointer_at_its_end(
    collect: ModuleType, tmp_path: Path
) -> None:
    out = _results(tmp_path)
    (out / "report.md").write_text("# Sweep report\n\nThe table; every row in the CSV.\n")
    assert collect.split_comparisons(out, "study_lightweight") is True
    md = (out / "report.md").read_text()
    assert md.startswith("# Sweep report") and md.rstrip().endswith("verdicts.py`).")
    assert "All rows: `report_comparisons_per_sample.csv`" in md


def test_a_bad_report_changes_nothing(collect: ModuleType, tmp_path: Path) -> None:
    out = _results(tmp_path, acc_of_last="inf")
    before = {p.name: p.read_text() for p in out.iterdir()}
    with pytest.raises(collect.BadInputError, match=r"report\.csv, row 22: acc='inf'"):
        collect.split_comparisons(out, "study_lightweight")
    assert {p.name: p.read_text() for p in out.iterdir()} == before


def test_a_sweep_without_comparisons_is_left_alone(collect: ModuleType, tmp_path: Path) -> None:
    out = _results(tmp_path)
    (out / "report_comparisons.csv").unlink()
    assert collect.split_comparisons(out, "study_lightweight") is False
    assert sorted(p.name for p in out.iterdir()) == ["report.csv", "report.md"]
