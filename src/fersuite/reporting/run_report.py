"""The report of one evaluated stage of a run: confusion matrix, VA scatter, per-class table,
and the per-sample predictions of the test set (:func:`write_predictions`,
:func:`read_predictions`)."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from fersuite.errors import UntrustedFileError
from fersuite.reporting.plots import (
    save_confusion_png,
    save_reliability_png,
    save_va_scatter_png,
)
from fersuite.reporting.tables import PER_CLASS_COLUMNS, per_class_rows, write_csv
from fersuite.utils.io import atomic_write

__all__ = [
    "MAX_PREDICTION_CLASSES",
    "MAX_PREDICTION_ROWS",
    "PREDICTIONS_FILE",
    "VA_COLUMNS",
    "Predictions",
    "RunReport",
    "VAPairs",
    "prediction_columns",
    "read_predictions",
    "write_predictions",
    "write_run_report",
]


@dataclass(frozen=True)
class VAPairs:
    """Predicted and true valence/arousal of the samples with valid VA labels."""

    pred_valence: np.ndarray
    true_valence: np.ndarray
    pred_arousal: np.ndarray
    true_arousal: np.ndarray

    def __len__(self) -> int:
        return len(self.true_valence)


@dataclass
class RunReport:
    """What :func:`write_run_report` wrote: file paths and the per-class rows."""

    stage: str
    confusion_png: Path | None
    per_class_csv: Path
    va_png: Path | None
    per_class: list[dict[str, Any]] = field(default_factory=list)
    reliability_png: Path | None = None
    #: ``predictions_test.csv`` (test stage; :func:`write_predictions`).
    predictions_csv: Path | None = None

    def paths(self) -> dict[str, Path]:
        out = {"per_class": self.per_class_csv}
        if self.confusion_png is not None:
            out["confusion"] = self.confusion_png
        if self.va_png is not None:
            out["va_scatter"] = self.va_png
        if self.reliability_png is not None:
            out["reliability"] = self.reliability_png
        if self.predictions_csv is not None:
            out["predictions"] = self.predictions_csv
        return out


def write_run_report(
    out_dir: str | os.PathLike[str],
    stage: str,
    confusion: Any,
    class_names: Sequence[str],
    va: VAPairs | None = None,
    reliability: Any = None,
    plots: bool = True,
) -> RunReport:
    """Write ``confusion_<stage>.png``, ``per_class_<stage>.csv`` and (with VA pairs)
    ``va_<stage>.png`` into ``out_dir``.

    ``confusion`` is a (C, C) count matrix, rows = true class, columns = prediction, in the
    order of ``class_names``. ``reliability`` (confidence bins, see
    :func:`~fersuite.reporting.plots.save_reliability_png`) adds ``reliability_<stage>.png``.
    ``plots=False``: the CSV only, no figure (drawing them is most of a small run's report).
    """
    out = Path(out_dir)
    rows = per_class_rows(confusion, class_names)
    conf_png = None
    if plots:
        conf_png = save_confusion_png(
            confusion, class_names, out / f"confusion_{stage}.png", title=f"{stage} confusion"
        )
    csv_path = out / f"per_class_{stage}.csv"
    write_csv(csv_path, rows, PER_CLASS_COLUMNS)
    va_png = None
    if plots and va is not None and len(va) > 0:
        va_png = save_va_scatter_png(
            va.pred_valence,
            va.true_valence,
            va.pred_arousal,
            va.true_arousal,
            out / f"va_{stage}.png",
            title=f"{stage}: prediction vs. truth",
        )
    rel_png = None
    if plots and reliability is not None:
        rel_png = save_reliability_png(
            reliability, out / f"reliability_{stage}.png", title=f"{stage} reliability"
        )
    return RunReport(stage, conf_png, csv_path, va_png, rows, rel_png)


# --- per-sample predictions ------------------------------------------------------------------

#: The file of every run that tests: one row per test sample (see :func:`prediction_columns`).
PREDICTIONS_FILE = "predictions_test.csv"
#: The last four columns: predicted and true valence/arousal (empty cells where there are none).
VA_COLUMNS = ("valence", "arousal", "valence_target", "arousal_target")
#: What :func:`read_predictions` accepts at most.
MAX_PREDICTION_ROWS = 10_000_000
MAX_PREDICTION_CLASSES = 1000
#: The longest line :func:`read_predictions` reads (characters): 1000 classes of long numbers.
MAX_PREDICTION_LINE = 1_000_000
_FIXED = ("index", "target", "pred")
_CHUNK = 65536
_INT = re.compile(r"[0-9]{1,18}")


def prediction_columns(class_names: Sequence[str]) -> list[str]:
    """``index,target,pred,p_<class>...,valence,arousal,valence_target,arousal_target``."""
    return [*_FIXED, *(f"p_{name}" for name in class_names), *VA_COLUMNS]


@dataclass(frozen=True)
class Predictions:
    """The per-sample test predictions of one run, in test-set order.

    ``index``: (N,) int64, each sample's position in the test split (unique, 0..N-1 for a
    whole test set). ``target``/``pred``: (N,) int64 class indices into ``class_names``
    (a soft-label target is its arg-max, as the metrics take it). ``probs``: (N, K) float64,
    the softmax of the scored logits (with test-time augmentation when the run used it).
    ``valence``/``arousal`` (predicted) and ``valence_target``/``arousal_target``: (N,)
    float64 with NaN where a sample has none, or None when no sample has one.
    """

    index: np.ndarray
    target: np.ndarray
    pred: np.ndarray
    probs: np.ndarray
    class_names: tuple[str, ...]
    valence: np.ndarray | None = None
    arousal: np.ndarray | None = None
    valence_target: np.ndarray | None = None
    arousal_target: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.index)

    def va_columns(self) -> list[np.ndarray | None]:
        return [self.valence, self.arousal, self.valence_target, self.arousal_target]

    def unique(self) -> Predictions:
        """Sorted by ``index``, each sample once (the first of its rows): a distributed
        sampler pads the ranks' shares with repeated samples."""
        _, first = np.unique(self.index, return_index=True)
        return self.take(first)

    def take(self, rows: np.ndarray) -> Predictions:
        va = [None if a is None else a[rows] for a in self.va_columns()]
        return Predictions(
            self.index[rows],
            self.target[rows],
            self.pred[rows],
            self.probs[rows],
            self.class_names,
            *va,
        )


def _cell(value: float) -> str:
    return "" if value != value else f"{value:.7g}"  # NaN: an empty cell


def write_predictions(path: str | os.PathLike[str], predictions: Predictions) -> Path:
    """Write ``predictions`` as CSV (columns :func:`prediction_columns`), atomically.
    Probabilities and valence/arousal have 7 significant digits; NaN is an empty cell."""
    p = predictions
    n = len(p)
    va = [np.full(n, np.nan) if a is None else np.asarray(a, np.float64) for a in p.va_columns()]
    probs = np.asarray(p.probs, dtype=np.float64)

    def write(fh: IO[Any]) -> None:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(prediction_columns(p.class_names))
        for i in range(n):
            writer.writerow(
                [
                    int(p.index[i]),
                    int(p.target[i]),
                    int(p.pred[i]),
                    *(_cell(v) for v in probs[i].tolist()),
                    *(_cell(float(a[i])) for a in va),
                ]
            )

    atomic_write(path, write, mode="w")
    return Path(path)


def _lines(fh: IO[str], path: str) -> Iterator[str]:
    """The file's lines, each at most :data:`MAX_PREDICTION_LINE` characters."""
    number = 0
    while True:
        line = fh.readline(MAX_PREDICTION_LINE + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_PREDICTION_LINE:
            raise UntrustedFileError(
                f"{path}: line {number} is longer than {MAX_PREDICTION_LINE} characters"
            )
        yield line


def _header(path: str, header: list[str] | None) -> tuple[str, ...]:
    """The class names of a predictions header, or an error naming what is wrong."""
    if header is None:
        raise UntrustedFileError(f"{path}: empty file; expected a predictions CSV header")
    expected = "index,target,pred,p_<class>...,valence,arousal,valence_target,arousal_target"
    if len(header) < 8 or tuple(header[:3]) != _FIXED or tuple(header[-4:]) != VA_COLUMNS:
        shown = ",".join(header[:5])[:120]
        raise UntrustedFileError(f"{path}: header {shown!r}...: expected columns {expected}")
    probs = header[3:-4]
    if len(probs) > MAX_PREDICTION_CLASSES:
        raise UntrustedFileError(
            f"{path}: header: {len(probs)} classes; at most {MAX_PREDICTION_CLASSES} are read"
        )
    names = []
    for column in probs:
        if not column.startswith("p_") or len(column) < 3:
            raise UntrustedFileError(
                f"{path}: header column {column[:80]!r}: expected p_<class name>"
            )
        names.append(column[2:])
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise UntrustedFileError(f"{path}: header: class {dup[:80]!r} appears twice")
    return tuple(names)


def _floats(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values, parsed): NaN and False where a cell is not a number."""
    try:
        return cells.astype(np.float64), np.ones(cells.shape, dtype=bool)
    except ValueError:
        values = np.full(cells.shape, np.nan)
        parsed = np.zeros(cells.shape, dtype=bool)
        for i, cell in enumerate(cells.tolist()):
            try:
                values[i] = float(cell)
                parsed[i] = True
            except ValueError:
                pass
        return values, parsed


def _ints(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values, parsed): cells of 1 to 18 ASCII digits; 0 and False elsewhere."""
    parsed = np.array([_INT.fullmatch(c) is not None for c in cells.tolist()], dtype=bool)
    values = np.zeros(cells.shape, dtype=np.int64)
    values[parsed] = cells[parsed].astype(np.int64)
    return values, parsed


class _Chunk:
    """Up to :data:`_CHUNK` rows parsed and checked column by column (``first``: the number
    of its first row); ``bad`` lists each failing column's first bad cell."""

    def __init__(self, rows: list[list[str]], first: int, header: Sequence[str]) -> None:
        k = len(header) - 7
        cells = np.array(rows, dtype=str).reshape(len(rows), len(header))
        self.first = first
        self.bad: list[tuple[int, int, str, str]] = []  # (row, column, cell, expected)
        ints = {}
        for j, name in enumerate(_FIXED):
            values, ok = _ints(cells[:, j])
            if name != "index":
                ok &= values < k
            expected = "a whole number >= 0" if name == "index" else f"a class index 0..{k - 1}"
            self._flag(cells, ok, j, expected)
            ints[name] = values
        self.index, self.target, self.pred = ints["index"], ints["target"], ints["pred"]
        probs, ok = _floats(cells[:, 3 : 3 + k].reshape(-1))
        probs = probs.reshape(len(rows), k)
        ok = ok.reshape(len(rows), k) & np.isfinite(probs) & (probs >= 0) & (probs <= 1)
        for j in range(k):
            self._flag(cells, ok[:, j], 3 + j, "a probability in [0, 1]")
        self.probs = probs
        self.va: list[np.ndarray] = []
        for j in range(3 + k, 7 + k):
            empty = cells[:, j] == ""
            values, ok = _floats(np.where(empty, "nan", cells[:, j]))
            self._flag(cells, empty | (ok & np.isfinite(values)), j, "a number or nothing")
            values[empty] = np.nan
            self.va.append(values)

    def _flag(self, cells: np.ndarray, ok: np.ndarray, j: int, expected: str) -> None:
        if not ok.all():
            r = int(np.argmin(ok))
            self.bad.append((r, j, str(cells[r, j]), expected))


def read_predictions(path: str | os.PathLike[str]) -> Predictions:
    """Read a ``predictions_test.csv`` (:func:`write_predictions`) as untrusted data.

    Checked, with one line naming the file and the row (data rows count from 1) otherwise
    (:class:`~fersuite.errors.UntrustedFileError`): the exact columns of
    :func:`prediction_columns` with 1 to :data:`MAX_PREDICTION_CLASSES` unique class names;
    1 to :data:`MAX_PREDICTION_ROWS` rows of as many cells; ``index`` whole numbers >= 0,
    each once; ``target``/``pred`` class indices 0..K-1; probabilities finite in [0, 1];
    valence/arousal finite or empty. Rows keep the file's order.
    """
    name = os.fspath(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            return _read_predictions(fh, name)
    except UnicodeDecodeError as exc:
        raise UntrustedFileError(f"{name}: not UTF-8 text ({exc.reason})") from None


def _read_predictions(fh: IO[str], path: str) -> Predictions:
    reader = csv.reader(_lines(fh, path), strict=True)
    try:
        header = next(reader, None)
        names = _header(path, header)
        assert header is not None
        width = len(header)
        chunks: list[_Chunk] = []
        rows: list[list[str]] = []
        count = 0
        for row in reader:
            count += 1
            if count > MAX_PREDICTION_ROWS:
                raise UntrustedFileError(
                    f"{path}: more than {MAX_PREDICTION_ROWS} rows; at most that many are read"
                )
            if len(row) != width:
                raise UntrustedFileError(
                    f"{path}: row {count}: {len(row)} cells; the header has {width} columns"
                )
            rows.append(row)
            if len(rows) == _CHUNK:
                chunks.append(_checked(path, _Chunk(rows, count - len(rows) + 1, header), header))
                rows = []
        if rows:
            chunks.append(_checked(path, _Chunk(rows, count - len(rows) + 1, header), header))
    except csv.Error as exc:
        raise UntrustedFileError(f"{path}: line {reader.line_num}: not CSV ({exc})") from None
    if not chunks:
        raise UntrustedFileError(f"{path}: no rows; expected one per test sample")
    index = np.concatenate([c.index for c in chunks])
    order = np.argsort(index, kind="stable")
    repeated = order[1:][index[order][1:] == index[order][:-1]]
    if len(repeated):
        r = int(repeated.min())
        raise UntrustedFileError(
            f"{path}: row {r + 1}: index {int(index[r])} appears twice; each sample once"
        )
    va: list[np.ndarray | None] = []
    for j in range(4):
        values = np.concatenate([c.va[j] for c in chunks])
        va.append(None if np.isnan(values).all() else values)
    return Predictions(
        index,
        np.concatenate([c.target for c in chunks]),
        np.concatenate([c.pred for c in chunks]),
        np.concatenate([c.probs for c in chunks]),
        names,
        *va,
    )


def _checked(path: str, chunk: _Chunk, header: Sequence[str]) -> _Chunk:
    if chunk.bad:
        r, j, cell, expected = min(chunk.bad)
        shown = cell if len(cell) <= 40 else cell[:40] + "..."
        column = header[j][:80]
        raise UntrustedFileError(
            f"{path}: row {chunk.first + r}: {column} = {shown!r}; expected {expected}"
        )
    return chunk
