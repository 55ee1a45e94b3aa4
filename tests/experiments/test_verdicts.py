"""experiments/studies/verdicts.py: a study's comparisons rebuilt from its report.csv."""

from __future__ import annotations

import csv
import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

from fersuite.reporting.jobs import REPORT_COLUMNS
from tests.conftest import REPO

EXPECTED_COLUMNS = ["metric", "a", "b", "n_seeds", "diff", "ci_low", "ci_high", "p", "p_holm",
                    "margin", "verdict"]  # fmt: skip
COMMITTED = sorted(REPO.glob("experiments/study_*/results*/report_comparisons.csv"))


@pytest.fixture(scope="module")
def verdicts() -> ModuleType:
    path = REPO / "experiments" / "studies" / "verdicts.py"
    spec = importlib.util.spec_from_file_location("study_verdicts", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


BASE = [0.80, 0.82, 0.78, 0.81, 0.79]  # per seed: the seed moves every arm alike
JITTER = [0.001, -0.002, 0.0, 0.002, -0.001]


def _write_report(path: Path, rows: list[dict[str, object]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=REPORT_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in REPORT_COLUMNS})


def _crafted(tmp_path: Path) -> Path:
    """3 arms x 5 seeds: resnet18 is 0.10 above the reference in every seed, mit_fer_last
    within +-0.002 of it (well inside the 0.02 accuracy margin); one failed job."""
    shift = {"mit_fer_multiscale": 0.0, "mit_fer_last": 0.0, "resnet18": 0.10}
    rows: list[dict[str, object]] = []
    for arm, delta in shift.items():
        for seed, (base, jitter) in enumerate(zip(BASE, JITTER, strict=True)):
            noise = jitter if arm != "mit_fer_multiscale" else 0.0
            acc = base + delta + noise
            rows.append({
                "job": str(len(rows)), "status": "ok", "model": arm,
                "overrides": f"arm={arm} seed={seed}", "acc": acc, "f1_macro": acc - 0.01,
                "valence_ccc": 0.6 + delta + noise, "arousal_ccc": 0.7 + noise,
            })  # fmt: skip
    rows.append({"job": "99", "status": "failed", "model": "resnet18",
                 "overrides": "arm=resnet18 seed=9", "reason": "no metrics.json"})  # fmt: skip
    out = tmp_path / "results"
    out.mkdir()
    _write_report(out / "report.csv", rows)
    return out


def test_crafted_report_gets_columns_and_verdicts(verdicts: ModuleType, tmp_path: Path) -> None:
    assert verdicts.study_pairs("study_zoo") is None  # every group against the first
    results = _crafted(tmp_path)
    assert verdicts.main([str(results), "--experiment", "study_zoo"]) == 0
    with (results / "report_comparisons.csv").open(newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert reader.fieldnames == EXPECTED_COLUMNS
    by = {(r["b"], r["metric"]): r for r in rows}
    assert {r["a"] for r in rows} == {"arm=mit_fer_multiscale"}
    assert {r["n_seeds"] for r in rows} == {"5"}  # the failed job's seed 9 is not paired
    assert by[("arm=resnet18", "acc")]["verdict"] == "better"
    assert float(by[("arm=resnet18", "acc")]["diff"]) == pytest.approx(0.10, abs=1e-6)
    assert by[("arm=mit_fer_last", "acc")]["verdict"] == "equivalent"
    assert by[("arm=mit_fer_last", "acc")]["margin"] == "0.02"
    md = (results / "comparisons.md").read_text()
    assert "## Comparisons" in md and "**better**" in md and "**equivalent**" in md


def _cross(results: Path, rows: list[tuple[str, str, str]]) -> None:
    """A sweep report's cross_dataset.csv: (job, dataset, acc) rows."""
    with (results / "cross_dataset.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["job", "group", "seed", "checkpoint", "dataset", "n", "acc", "note"])
        writer.writerows(
            [job, "", "", "c.ckpt", dataset, "10", acc, ""] for job, dataset, acc in rows
        )


def test_cross_dataset_figures_are_compared_per_test_set(
    verdicts: ModuleType, tmp_path: Path
) -> None:
    results = _crafted(tmp_path)
    # on test set "other" resnet18 is 0.2 below the reference in every seed
    base = {"mit_fer_multiscale": 0.5, "mit_fer_last": 0.5, "resnet18": 0.3}
    rows = []
    with (results / "report.csv").open(newline="") as fh:
        for r in csv.DictReader(fh):
            if r["status"] == "ok":
                seed = int(r["overrides"].split("seed=")[1])
                rows.append((r["job"], "other", str(base[r["model"]] + JITTER[seed])))
    _cross(results, rows)
    assert verdicts.main([str(results), "--experiment", "study_zoo"]) == 0
    with (results / "report_comparisons.csv").open(newline="") as fh:
        by = {(r["b"], r["metric"]): r for r in csv.DictReader(fh)}
    row = by[("arm=resnet18", "other/acc")]
    assert row["verdict"] == "worse" and float(row["diff"]) == pytest.approx(-0.2, abs=1e-6)
    assert by[("arm=resnet18", "acc")]["verdict"] == "better"  # its own test set: unchanged


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (("0", "other", "nan"), "row 2: acc='nan'; expected a finite number"),
        (("77", "other", "0.5"), "row 2: job '77' is not in report.csv"),
        (("0", "a/b", "0.5"), "row 2: dataset 'a/b'; expected a name"),
    ],
)
def test_a_bad_cross_dataset_row_is_one_line_naming_it(
    verdicts: ModuleType,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    row: tuple[str, str, str],
    expected: str,
) -> None:
    results = _crafted(tmp_path)
    _cross(results, [row])
    assert verdicts.main([str(results), "--experiment", "study_zoo"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cross_dataset.csv, " + expected in err[0], err
    assert not (results / "report_comparisons.csv").exists()


def test_bad_value_is_one_line_naming_file_and_row(
    verdicts: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = _crafted(tmp_path)
    lines = (results / "report.csv").read_text().splitlines()
    lines[2] = lines[2].replace(",0.6,", ",inf,", 1)  # row 3: mit_fer_multiscale seed 1
    assert ",inf," in lines[2]
    (results / "report.csv").write_text("\n".join(lines) + "\n")
    assert verdicts.main([str(results), "--experiment", "study_zoo"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "report.csv, row 3" in err[0] and "valence_ccc='inf'" in err[0]
    assert not (results / "report_comparisons.csv").exists()


def test_unknown_preset_exits_2(verdicts: ModuleType, tmp_path: Path) -> None:
    assert verdicts.main([str(_crafted(tmp_path)), "--experiment", "study_nope"]) == 2


@pytest.mark.parametrize(
    "committed", COMMITTED, ids=[str(p.parent.relative_to(REPO)) for p in COMMITTED]
)
def test_committed_comparisons_are_what_the_script_writes(
    verdicts: ModuleType, tmp_path: Path, committed: Path
) -> None:
    results = tmp_path / committed.parent.name
    results.mkdir()
    for name in ("report.csv", "cross_dataset.csv"):  # the second: studies with datasets=[...]
        if (committed.parent / name).is_file():
            shutil.copy(committed.parent / name, results / name)
    study = committed.parent.parent.name
    assert verdicts.main([str(results), "--experiment", study]) == 0
    for name in ("report_comparisons.csv", "comparisons.md"):
        assert (results / name).read_text() == (committed.parent / name).read_text(), name


def test_every_study_results_folder_has_its_comparisons() -> None:
    reports = sorted(REPO.glob("experiments/study_*/results*/report.csv"))
    assert reports and [p.parent for p in reports] == [p.parent for p in COMMITTED]
