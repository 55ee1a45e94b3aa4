"""predictions_test.csv: written and read back; crafted bad files refused in one line."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from fersuite.errors import UntrustedFileError
from fersuite.reporting import run_report
from fersuite.reporting.run_report import (
    Predictions,
    prediction_columns,
    read_predictions,
    write_predictions,
)

NAMES = ("anger", "happy", "sad, tired")  # a comma in a class name is quoted, not split


def _predictions(n: int = 12, seed: int = 0, va: bool = True) -> Predictions:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, len(NAMES)))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    va_true = np.where(rng.random(n) < 0.3, np.nan, rng.uniform(-1, 1, n))  # some invalid
    cols = (rng.uniform(-1, 1, n), rng.uniform(-1, 1, n), va_true, va_true * 0.5) if va else ()
    return Predictions(
        rng.permutation(n),
        rng.integers(0, len(NAMES), n),
        probs.argmax(1),
        probs,
        NAMES,
        *cols,
    )


def test_round_trip_keeps_every_column(tmp_path: Path) -> None:
    p = _predictions()
    path = write_predictions(tmp_path / "predictions_test.csv", p)
    with open(path, newline="") as fh:
        header = next(csv.reader(fh))
    assert header == [
        "index",
        "target",
        "pred",
        "p_anger",
        "p_happy",
        "p_sad, tired",
        "valence",
        "arousal",
        "valence_target",
        "arousal_target",
    ]
    assert header == prediction_columns(NAMES)
    got = read_predictions(path)
    assert got.class_names == NAMES
    np.testing.assert_array_equal(got.index, p.index)  # the file's row order is kept
    np.testing.assert_array_equal(got.target, p.target)
    np.testing.assert_array_equal(got.pred, p.pred)
    np.testing.assert_allclose(got.probs, p.probs, rtol=1e-6, atol=1e-7)
    assert got.index.dtype == np.int64 and got.probs.shape == (12, 3)
    for mine, theirs in zip(got.va_columns(), p.va_columns(), strict=True):
        assert mine is not None and theirs is not None
        np.testing.assert_allclose(mine, theirs, rtol=1e-6, atol=1e-7, equal_nan=True)


def test_no_va_is_empty_cells_read_as_none(tmp_path: Path) -> None:
    path = write_predictions(tmp_path / "p.csv", _predictions(va=False))
    rows = list(csv.DictReader(open(path, newline="")))  # noqa: SIM115
    assert all(r["valence"] == "" and r["arousal_target"] == "" for r in rows)
    got = read_predictions(path)
    assert got.va_columns() == [None, None, None, None]


def test_unique_sorts_by_index_and_drops_repeats() -> None:
    p = Predictions(
        np.array([3, 1, 0, 2, 3, 0]),
        np.array([0, 1, 2, 0, 9, 9]),
        np.zeros(6, dtype=np.int64),
        np.ones((6, 1)),
        ("x",),
    )
    u = p.unique()
    assert u.index.tolist() == [0, 1, 2, 3]
    assert u.target.tolist() == [2, 1, 0, 0]  # the first row of each sample


def _good_rows(tmp_path: Path) -> tuple[Path, list[list[str]]]:
    path = write_predictions(tmp_path / "good.csv", _predictions(n=6))
    with open(path, newline="") as fh:
        return path, list(csv.reader(fh))


def _write(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


def _refused(path: Path, match: str) -> str:
    with pytest.raises(UntrustedFileError, match=match) as err:
        read_predictions(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    return message


@pytest.mark.parametrize(
    ("row", "col", "value", "match"),
    [
        (3, "p_happy", "nan", r"row 3: p_happy = 'nan'; expected a probability in \[0, 1\]"),
        (2, "p_anger", "1.5", r"row 2: p_anger = '1.5'; expected a probability"),
        (1, "p_anger", "-0.01", r"row 1: p_anger = '-0.01'"),
        (4, "p_anger", "inf", r"row 4: p_anger = 'inf'"),
        (5, "p_anger", "abc", r"row 5: p_anger = 'abc'"),
        (2, "target", "x", r"row 2: target = 'x'; expected a class index 0\.\.2"),
        (2, "pred", "3", r"row 2: pred = '3'; expected a class index 0\.\.2"),
        (6, "index", "-1", r"row 6: index = '-1'; expected a whole number >= 0"),
        (6, "index", "1.0", r"row 6: index = '1.0'"),
        (3, "valence", "nan", r"row 3: valence = 'nan'; expected a number or nothing"),
    ],
)
def test_a_bad_cell_is_named_with_its_row(
    tmp_path: Path, row: int, col: str, value: str, match: str
) -> None:
    _, rows = _good_rows(tmp_path)
    rows[row][rows[0].index(col)] = value
    _refused(_write(tmp_path / "bad.csv", rows), match)


def test_a_repeated_index_is_refused(tmp_path: Path) -> None:
    _, rows = _good_rows(tmp_path)
    rows[5][0] = rows[2][0]
    _refused(_write(tmp_path / "dup.csv", rows), rf"row 5: index {rows[2][0]} appears twice")


def test_too_many_classes_is_refused(tmp_path: Path) -> None:
    names = [f"c{i}" for i in range(1001)]
    header = prediction_columns(names)
    row = ["0", "0", "0", *(["0.000999"] * 1001), "", "", "", ""]
    _refused(_write(tmp_path / "wide.csv", [header, row]), r"header: 1001 classes; at most 1000")
    # 1000 classes are read
    _write(tmp_path / "ok.csv", [prediction_columns(names[:1000]), row[:3] + row[4:]])
    assert read_predictions(tmp_path / "ok.csv").probs.shape == (1, 1000)


@pytest.mark.parametrize(
    ("header", "match"),
    [
        (["idx", "target", "pred", "p_a", *run_report.VA_COLUMNS], "expected columns index"),
        (["index", "target", "pred", "p_a", "valence"], "expected columns index"),
        (["index", "target", "pred", "a", *run_report.VA_COLUMNS], "header column 'a'"),
        (["index", "target", "pred", "p_a", "p_a", *run_report.VA_COLUMNS], "'a' appears twice"),
        (["index", "target", "pred", *run_report.VA_COLUMNS], "expected columns"),
    ],
)
def test_a_bad_header_is_refused(tmp_path: Path, header: list[str], match: str) -> None:
    _refused(_write(tmp_path / "h.csv", [header]), match)


def test_short_rows_empty_files_and_binary_are_refused(tmp_path: Path) -> None:
    _, rows = _good_rows(tmp_path)
    _refused(
        _write(tmp_path / "short.csv", [*rows[:3], rows[3][:-1]]), r"row 3: 9 cells; the header"
    )
    _refused(_write(tmp_path / "none.csv", rows[:1]), "no rows")
    (tmp_path / "empty.csv").write_text("")
    _refused(tmp_path / "empty.csv", "empty file")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00index")
    _refused(tmp_path / "bin.csv", "not UTF-8")


def test_bounds_on_rows_and_line_length(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = _good_rows(tmp_path)
    monkeypatch.setattr(run_report, "MAX_PREDICTION_ROWS", 5)
    _refused(path, "more than 5 rows")
    monkeypatch.setattr(run_report, "MAX_PREDICTION_ROWS", 6)
    assert len(read_predictions(path)) == 6
    monkeypatch.setattr(run_report, "MAX_PREDICTION_LINE", 40)
    _refused(path, "line 1 is longer than 40 characters")


def test_rows_are_checked_across_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_report, "_CHUNK", 4)  # 12 rows: three chunks
    p = _predictions(n=12, seed=3)
    path = write_predictions(tmp_path / "p.csv", p)
    np.testing.assert_array_equal(read_predictions(path).index, p.index)
    rows = list(csv.reader(open(path, newline="")))  # noqa: SIM115
    rows[10][3] = "2"
    _refused(_write(tmp_path / "bad.csv", rows), r"row 10: p_anger = '2'")
