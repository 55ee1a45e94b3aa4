"""Tables of results: per-class figures from a confusion matrix, CSV and Markdown writers."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from fersuite.utils.io import atomic_write

__all__ = ["PER_CLASS_COLUMNS", "markdown_table", "per_class_rows", "write_csv"]

#: Columns of ``per_class_<stage>.csv``.
PER_CLASS_COLUMNS: tuple[str, ...] = (
    "class",
    "support",
    "correct",
    "predicted",
    "accuracy",
    "precision",
    "f1",
)


def _as_matrix(confusion: Any, num_classes: int) -> np.ndarray:
    cm = np.asarray(confusion.cpu() if hasattr(confusion, "cpu") else confusion, dtype=np.int64)
    if cm.shape != (num_classes, num_classes):
        raise ValueError(
            f"confusion matrix has shape {cm.shape}; expected ({num_classes}, {num_classes}) "
            "(rows = true class, columns = predicted class, one per class name)"
        )
    if (cm < 0).any():
        raise ValueError("confusion matrix has negative counts")
    return cm


def per_class_rows(confusion: Any, class_names: Sequence[str]) -> list[dict[str, Any]]:
    """One row per class from a confusion matrix (rows = true class, columns = prediction).

    ``accuracy`` is the per-class accuracy (recall: correct / support), ``precision`` is
    correct / predicted; both are NaN when undefined (no samples / no predictions of the class),
    and ``f1`` is their harmonic mean (0 when both are 0, NaN when either is undefined).
    """
    cm = _as_matrix(confusion, len(class_names))
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    correct = np.diag(cm)
    rows: list[dict[str, Any]] = []
    for i, name in enumerate(class_names):
        acc = correct[i] / support[i] if support[i] else math.nan
        prec = correct[i] / predicted[i] if predicted[i] else math.nan
        if math.isnan(acc) or math.isnan(prec):
            f1 = math.nan
        else:
            f1 = 0.0 if acc + prec == 0 else 2 * acc * prec / (acc + prec)
        rows.append(
            {
                "class": str(name),
                "support": int(support[i]),
                "correct": int(correct[i]),
                "predicted": int(predicted[i]),
                "accuracy": float(acc),
                "precision": float(prec),
                "f1": float(f1),
            }
        )
    return rows


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value)
    if isinstance(value, Mapping):
        return " ".join(f"{k}:{v}" for k, v in value.items())
    return "" if value is None else value


def write_csv(
    path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]], columns: Sequence[str]
) -> None:
    """Write ``rows`` (dicts) as CSV with the given ``columns``, atomically.

    Missing keys and NaN become empty cells; lists are joined with spaces and dicts are written
    as ``key:value`` pairs.
    """
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: _cell(row.get(c)) for c in columns})
    text = buf.getvalue()
    atomic_write(path, lambda fh: fh.write(text), mode="w")


Formatter = Callable[[Any], str]


def markdown_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    headers: Mapping[str, str] | None = None,
    formats: Mapping[str, Formatter] | None = None,
) -> str:
    """A GitHub-flavoured Markdown table; ``formats`` maps a column to a value formatter.

    Missing values and NaN are written as ``-``; ``|`` inside cells is escaped.
    """
    headers = headers or {}
    formats = formats or {}

    def cell(col: str, value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        text = formats[col](value) if col in formats else str(_cell(value))
        return text.replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(headers.get(c, c) for c in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(cell(c, r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body]) + "\n"
