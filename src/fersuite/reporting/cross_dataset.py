"""The cross-dataset matrix: checkpoints (rows) tested on test sets (columns).

``cross_dataset.csv`` is a long table, one line per (checkpoint, test set) cell, with the
columns :data:`COLUMNS`: ``checkpoint`` (the file as given), ``dataset`` (the ``conf/data``
name), ``n`` (test images), ``acc``, ``balanced_acc``, ``f1_macro``, ``valence_ccc`` and
``arousal_ccc`` (empty where the test set has no valence/arousal) and ``note`` (empty for a
tested cell; the one-line reason for a cell that was refused, whose figures are empty).
``cross_dataset.png`` is the heatmap of ``acc`` (a refused cell is blank, marked "refused").

A sweep report gathers its jobs' matrices (:func:`gather_cross_dataset`): their lines, with the
job, its group (its overrides without ``seed``) and seed in front, go into the sweep's
``cross_dataset.csv``, and the heatmap shows the mean accuracy over the seeds of each group.
Those files are read as someone else's data (:func:`read_cross_csv`): bounded in size, every
figure a finite number in its range; a file that is not is refused in one line naming it.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fersuite.errors import UntrustedFileError
from fersuite.reporting.seeds import mean_ci
from fersuite.utils.io import atomic_path, atomic_write

__all__ = [
    "COLUMNS",
    "METRICS",
    "SWEEP_COLUMNS",
    "CrossCell",
    "gather_cross_dataset",
    "matrix",
    "matrix_markdown",
    "read_cross_csv",
    "save_cross_png",
    "short_labels",
    "write_cross_csv",
]

#: The figures of a cell, from the ``test/*`` keys of its metrics.
METRICS = ("acc", "balanced_acc", "f1_macro", "valence_ccc", "arousal_ccc")
COLUMNS = ("checkpoint", "dataset", "n", *METRICS, "note")
#: The sweep's ``cross_dataset.csv``: the job's lines with where they came from in front.
SWEEP_COLUMNS = ("job", "group", "seed", *COLUMNS)

#: Bounds of a ``cross_dataset.csv`` read back (a matrix of a few models and test sets).
MAX_BYTES = 1 << 20
MAX_ROWS = 10_000
MAX_TEXT = 1000
MAX_N = 10**9

CrossCell = dict[str, Any]


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_cross_csv(
    path: str | os.PathLike[str],
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] = COLUMNS,
) -> Path:
    """Write the cells ``rows`` (dicts keyed by ``columns``) atomically; floats in full."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_text(row.get(c)) for c in columns])
    text = buf.getvalue()
    atomic_write(path, lambda fh: fh.write(text), mode="w")
    return Path(path)


def _bounded(value: str, column: str, where: str) -> float | None:
    if value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        raise UntrustedFileError(f"{where}: {column}={value[:40]!r} is not a number") from None
    low = -1.0 if column.endswith("_ccc") else 0.0
    if not math.isfinite(number) or not low <= number <= 1.0:
        raise UntrustedFileError(
            f"{where}: {column}={value[:40]!r}; expected a finite number in [{low:g}, 1]"
        )
    return number


def read_cross_csv(path: str | os.PathLike[str]) -> list[CrossCell]:
    """The cells of a ``cross_dataset.csv`` someone else wrote, checked: at most 1 MiB and
    10,000 lines, the header :data:`COLUMNS`, ``n`` a whole number, each figure empty or a
    finite number in [0, 1] ([-1, 1] for a CCC), text without control characters. Anything
    else is :class:`~fersuite.errors.UntrustedFileError`, one line naming the file."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_BYTES:
            raise UntrustedFileError(f"{p}: {size} bytes; a cross_dataset.csv has at most 1 MiB")
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise UntrustedFileError(f"{p}: not UTF-8 text") from None
    except OSError as exc:
        raise UntrustedFileError(f"{p}: unreadable ({exc.strerror or exc})") from None
    try:
        lines = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise UntrustedFileError(f"{p}: not a CSV file ({exc})") from None
    if not lines or tuple(lines[0]) != COLUMNS:
        raise UntrustedFileError(f"{p}: the header is not {','.join(COLUMNS)}")
    if len(lines) - 1 > MAX_ROWS:
        raise UntrustedFileError(f"{p}: {len(lines) - 1} lines; at most {MAX_ROWS}")
    cells: list[CrossCell] = []
    for i, line in enumerate(lines[1:], start=2):
        where = f"{p}: line {i}"
        if len(line) != len(COLUMNS):
            raise UntrustedFileError(f"{where}: {len(line)} fields; expected {len(COLUMNS)}")
        raw = dict(zip(COLUMNS, line, strict=True))
        for key in ("checkpoint", "dataset", "note"):
            value = raw[key]
            if len(value) > MAX_TEXT or any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
                raise UntrustedFileError(f"{where}: {key} is not one short line of text")
        if not raw["checkpoint"] or not raw["dataset"]:
            raise UntrustedFileError(f"{where}: checkpoint and dataset must be named")
        cell: CrossCell = {"checkpoint": raw["checkpoint"], "dataset": raw["dataset"]}
        n = raw["n"]
        if n != "" and (not n.isdigit() or int(n) > MAX_N):
            raise UntrustedFileError(f"{where}: n={n[:40]!r}; expected a whole number of images")
        cell["n"] = int(n) if n else None
        for key in METRICS:
            cell[key] = _bounded(raw[key], key, where)
        cell["note"] = raw["note"]
        cells.append(cell)
    return cells


def matrix(
    cells: Sequence[Mapping[str, Any]], row_key: str = "checkpoint", metric: str = "acc"
) -> tuple[list[str], list[str], np.ndarray]:
    """Rows, columns (first-seen order) and the mean ``metric`` of each (row, dataset) pair
    (NaN where no cell has a figure)."""
    rows: list[str] = []
    cols: list[str] = []
    for c in cells:
        if c[row_key] not in rows:
            rows.append(c[row_key])
        if c["dataset"] not in cols:
            cols.append(c["dataset"])
    sums = np.zeros((len(rows), len(cols)))
    counts = np.zeros((len(rows), len(cols)))
    for c in cells:
        v = c.get(metric)
        if isinstance(v, int | float) and math.isfinite(v):
            i, j = rows.index(c[row_key]), cols.index(c["dataset"])
            sums[i, j] += float(v)
            counts[i, j] += 1
    with np.errstate(invalid="ignore"):
        values = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return rows, cols, values


def save_cross_png(
    path: str | os.PathLike[str],
    rows: Sequence[str],
    cols: Sequence[str],
    values: np.ndarray,
    title: str = "accuracy",
) -> Path:
    """A heatmap of ``values`` (rows x cols, NaN: "refused" / no figure), written atomically."""
    width = 2.5 + 1.3 * max(1, len(cols))
    height = 1.5 + 0.6 * max(1, len(rows))
    fig = Figure(figsize=(min(width, 30), min(height, 30)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    shown = np.ma.masked_invalid(np.asarray(values, dtype=float))
    image = ax.imshow(shown, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, label=title)
    ax.set_xticks(range(len(cols)), [c[:30] for c in cols], rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), [r[-40:] for r in rows])
    ax.set_xlabel("test set")
    ax.set_ylabel("model")
    for i in range(len(rows)):
        for j in range(len(cols)):
            v = values[i, j]
            label = "refused" if not math.isfinite(v) else f"{v:.3f}"
            colour = "white" if not math.isfinite(v) or v < 0.6 else "black"
            ax.text(j, i, label, ha="center", va="center", color=colour, fontsize=9)
    ax.set_title(f"Cross-dataset {title}")
    fig.tight_layout()
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return out


def matrix_markdown(
    cells: Sequence[Mapping[str, Any]], row_key: str = "row", metric: str = "acc"
) -> str:
    """A markdown table of ``metric``: a row per ``row_key`` (first-seen order), a column per
    test set; each cell the mean over the cells of that pair (the seeds) with the half-width of
    its Student-t 95% interval and the count, ``–`` where none has a figure."""
    rows = list(dict.fromkeys(c[row_key] for c in cells))
    cols = list(dict.fromkeys(c["dataset"] for c in cells))
    values: dict[tuple[str, str], list[float]] = {}
    for c in cells:
        v = c.get(metric)
        if isinstance(v, int | float) and math.isfinite(v):
            values.setdefault((c[row_key], c["dataset"]), []).append(float(v))
    lines = [
        "| trained on \\ tested on | " + " | ".join(f"`{c}`" for c in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for r in rows:
        out = []
        for c in cols:
            ci = mean_ci(values.get((r, c), []))
            if ci.n == 0:
                out.append("–")
            elif ci.n == 1:
                out.append(f"{ci.mean:.3f} (n=1)")
            else:
                out.append(f"{ci.mean:.3f} ± {ci.ci95:.3f} (n={ci.n})")
        lines.append(f"| `{r}` | " + " | ".join(out) + " |")
    return "\n".join(lines) + "\n"


def short_labels(paths: Sequence[str]) -> list[str]:
    """The shortest path tails that tell the files apart (``run1/best.ckpt``)."""
    parts = [Path(p).parts or (p,) for p in paths]
    for k in range(1, max((len(x) for x in parts), default=1) + 1):
        labels = [str(Path(*x[-k:])) for x in parts]
        if len(set(labels)) == len(set(paths)):
            return labels
    return list(paths)


def gather_cross_dataset(
    jobs: Sequence[tuple[str, str, str | None, Path]], out: Path
) -> tuple[dict[str, Path], list[str], str]:
    """The matrices of a sweep's jobs (``(job, group, seed, job dir)``; those without a
    ``cross_dataset.csv`` are skipped) into ``out/cross_dataset.csv`` (:data:`SWEEP_COLUMNS`)
    and ``out/cross_dataset.png`` (mean accuracy over each group's seeds; a row per group,
    and per checkpoint position when a job tested several). Returns the paths written, one
    line per refused file, and the markdown tables of accuracy and balanced accuracy (mean ±
    95% half-width over the seeds, :func:`matrix_markdown`; empty when nothing was gathered)."""
    gathered: list[CrossCell] = []
    refused: list[str] = []
    for job, group, seed, path in jobs:
        file = path / "cross_dataset.csv"
        if not file.is_file():
            continue
        try:
            cells = read_cross_csv(file)
        except UntrustedFileError as exc:
            refused.append(str(exc))
            continue
        order = list(dict.fromkeys(c["checkpoint"] for c in cells))
        for c in cells:
            row = group or "(all)"
            if len(order) > 1:
                row += f" #{order.index(c['checkpoint']) + 1}"
            gathered.append({"job": job, "group": group, "seed": seed, "row": row, **c})
    paths: dict[str, Path] = {}
    if gathered:
        paths["cross_csv"] = write_cross_csv(out / "cross_dataset.csv", gathered, SWEEP_COLUMNS)
        rows, cols, values = matrix(gathered, row_key="row")
        paths["cross_png"] = save_cross_png(
            out / "cross_dataset.png", rows, cols, values, "accuracy (mean over seeds)"
        )
    tables = "".join(
        f"\n{title} (mean ± 95% half-width over the seeds, n seeds):\n\n"
        + matrix_markdown(gathered, "row", metric)
        for metric, title in (("acc", "Accuracy"), ("balanced_acc", "Balanced accuracy"))
        if any(isinstance(c.get(metric), float) for c in gathered)
    )
    return paths, refused, tables
