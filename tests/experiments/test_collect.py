"""experiments/studies/collect.py: a study's results folder may take another study's committed
jobs of the same config (``--reuse``); its grouped table and verdicts then cover all rows."""

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


BASE = [0.60, 0.62, 0.58, 0.61, 0.59]
#: Accuracy above BASE per arm, and MACs; the swept arms and the zoo's.
ARMS = {
    "lightweight_cnn_050": (0.00, 14.8e6),
    "mobilenetv2_140": (-0.20, 32.6e6),
    "lightweight_cnn": (0.05, 38.2e6),
    "mobilenetv2_100": (-0.30, 16.9e6),
    "resnet18": (0.20, 94.6e6),
}


def _report(path: Path, arms: list[str], first_job: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=REPORT_COLUMNS)
        writer.writeheader()
        job = first_job
        for arm in arms:
            delta, macs = ARMS[arm]
            for seed, base in enumerate(BASE):
                acc = base + delta + 0.001 * seed
                row = {"job": job, "status": "ok", "model": arm, "acc": acc, "f1_macro": acc,
                       "balanced_acc": acc, "valence_ccc": 0.5 + delta, "arousal_ccc": 0.6,
                       "macs": macs, "overrides": f"arm={arm} seed={seed}"}  # fmt: skip
                writer.writerow({c: row.get(c, "") for c in REPORT_COLUMNS})
                job += 1


def test_reused_rows_join_the_report_grouped_table_and_verdicts(
    collect: ModuleType, tmp_path: Path
) -> None:
    out = tmp_path / "study_lightweight" / "results"
    _report(out / "report.csv", ["lightweight_cnn_050", "mobilenetv2_140"])
    (out / "report.md").write_text("# Sweep report\n")
    (out / "report_comparisons.csv").write_text("the sweep's own, with per-sample rows\n")
    zoo = tmp_path / "study_zoo" / "results" / "report.csv"
    _report(zoo, ["resnet18", "lightweight_cnn", "mobilenetv2_100"], first_job=0)

    added = collect.reuse_rows(
        out, "study_lightweight", zoo, ["arm=lightweight_cnn", "arm=mobilenetv2_100"]
    )

    assert added == 10  # resnet18 is not taken
    with (out / "report.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 20 and rows[10]["job"] == "study_zoo/5"
    assert (out / "report_comparisons_per_sample.csv").read_text().startswith("the sweep's own")
    with (out / "report_grouped.csv").open(newline="") as fh:
        grouped = {r["group"]: r for r in csv.DictReader(fh)}
    assert set(grouped) == {f"arm={a}" for a in ARMS if a != "resnet18"}
    assert float(grouped["arm=mobilenetv2_100"]["macs_mean"]) == pytest.approx(16.9e6)
    assert grouped["arm=lightweight_cnn"]["n"] == "5"
    with (out / "report_comparisons.csv").open(newline="") as fh:
        compared = {(r["a"], r["b"], r["metric"]): r for r in csv.DictReader(fh)}
    # the preset's three pairs, two of which need a reused arm
    row = compared[("arm=lightweight_cnn_050", "arm=mobilenetv2_100", "acc")]
    assert row["n_seeds"] == "5" and float(row["diff"]) == pytest.approx(-0.30, abs=1e-9)
    assert row["verdict"] == "worse"
    assert compared[("arm=lightweight_cnn", "arm=mobilenetv2_140", "acc")]["verdict"] == "worse"
    assert len(compared) == 15
    md = (out / "report.md").read_text()
    assert "Jobs reused from" in md and "`arm=mobilenetv2_100`" in md
    # the committed table is what verdicts.py rebuilds from the merged report.csv
    before = (out / "report_comparisons.csv").read_text()
    assert sys.modules["verdicts"].main([str(out), "--experiment", "study_lightweight"]) == 0
    assert (out / "report_comparisons.csv").read_text() == before


def test_no_matching_row_is_refused_and_nothing_is_changed(
    collect: ModuleType, tmp_path: Path
) -> None:
    out = tmp_path / "study_lightweight" / "results"
    _report(out / "report.csv", ["lightweight_cnn_050", "mobilenetv2_140"])
    (out / "report_comparisons.csv").write_text("kept\n")
    before = (out / "report.csv").read_text()
    zoo = tmp_path / "study_zoo" / "results" / "report.csv"
    _report(zoo, ["resnet18"])
    with pytest.raises(collect.BadInputError, match=r"report\.csv: no row with one of"):
        collect.reuse_rows(out, "study_lightweight", zoo, ["arm=lightweight_cnn"])
    assert (out / "report.csv").read_text() == before
    assert (out / "report_comparisons.csv").read_text() == "kept\n"


def test_a_source_with_other_columns_is_refused(collect: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "study_lightweight" / "results"
    _report(out / "report.csv", ["lightweight_cnn_050"])
    bad = tmp_path / "study_zoo" / "results" / "report.csv"
    bad.parent.mkdir(parents=True)
    bad.write_text("job,status,model,overrides,acc\n0,ok,m,arm=lightweight_cnn seed=0,0.5\n")
    with pytest.raises(collect.BadInputError, match="expected the columns job,status"):
        collect.reuse_rows(out, "study_lightweight", bad, ["arm=lightweight_cnn"])
