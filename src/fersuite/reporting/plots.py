"""PNG figures of a run or a sweep, drawn with matplotlib's Agg canvas (no display, no pyplot).

Figures are built as :class:`matplotlib.figure.Figure` objects (never registered with pyplot, so
nothing leaks between calls or threads) and written atomically.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from fersuite.utils.io import atomic_path

__all__ = [
    "ParetoPoint",
    "ccc",
    "pareto_front",
    "save_confusion_png",
    "save_pareto_png",
    "save_va_scatter_png",
    "si_count",
]


def _save(fig: Figure, path: str | os.PathLike[str], dpi: int = 120) -> Path:
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return out


def _array(values: Any) -> np.ndarray:
    arr = np.asarray(values.cpu() if hasattr(values, "cpu") else values, dtype=np.float64)
    return arr.reshape(-1) if arr.ndim != 1 else arr


def ccc(pred: Any, true: Any) -> float:
    """Lin's concordance correlation coefficient (NaN for fewer than 2 samples)."""
    p, t = _array(pred), _array(true)
    if len(p) < 2:
        return math.nan
    pm, tm = p.mean(), t.mean()
    cov = ((p - pm) * (t - tm)).mean()
    denom = p.var() + t.var() + (pm - tm) ** 2
    return float(2 * cov / denom) if denom > 0 else math.nan


def save_confusion_png(
    confusion: Any,
    class_names: Sequence[str],
    path: str | os.PathLike[str],
    title: str = "Confusion matrix",
) -> Path:
    """Confusion matrix (rows = true class, columns = prediction) as a PNG.

    Cells are coloured by the row-normalised rate (per-class recall on the diagonal) and
    annotated with the count and the rate; the title gives overall accuracy and sample count.
    """
    cm = np.asarray(confusion.cpu() if hasattr(confusion, "cpu") else confusion, dtype=np.int64)
    k = len(class_names)
    if cm.shape != (k, k):
        raise ValueError(f"confusion matrix has shape {cm.shape}; expected ({k}, {k})")
    support = cm.sum(axis=1, keepdims=True)
    rates = np.divide(cm, support, out=np.zeros(cm.shape, dtype=np.float64), where=support > 0)
    total = int(cm.sum())
    acc = float(np.trace(cm) / total) if total else math.nan

    side = max(4.0, 0.75 * k + 2.0)
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ax.set_xticks(range(k), labels=list(class_names), rotation=45, ha="right")
    ax.set_yticks(range(k), labels=list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title} (acc {acc:.3f}, n={total})")
    for i in range(k):
        for j in range(k):
            colour = "white" if rates[i, j] > 0.5 else "black"
            ax.text(
                j,
                i,
                f"{cm[i, j]}\n{rates[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color=colour,
            )
    return _save(fig, path)


def save_reliability_png(
    bins: Any, path: str | os.PathLike[str], title: str = "Reliability diagram"
) -> Path:
    """Reliability diagram: accuracy per top-1 confidence bin against the diagonal.

    ``bins`` is (B, 3): per equal-width bin the sample count, mean confidence and accuracy
    (:meth:`fersuite.metrics.AffectMetrics.reliability`); the title gives the ECE."""
    b = np.asarray(bins.cpu() if hasattr(bins, "cpu") else bins, dtype=np.float64)
    count, conf, acc = b[:, 0], b[:, 1], b[:, 2]
    n = len(count)
    total = count.sum()
    ece = float(np.sum(count * np.abs(acc - conf)) / total) if total else math.nan
    edges = np.linspace(0.0, 1.0, n + 1)
    fig = Figure(figsize=(5.0, 5.0), layout="constrained")
    ax = fig.subplots()
    ax.bar(edges[:-1], acc, width=1.0 / n, align="edge", edgecolor="black", label="accuracy")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-1 softmax)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title} (ECE {ece:.3f}, n={int(total)})")
    ax.legend(loc="upper left")
    return _save(fig, path)


def save_va_scatter_png(
    pred_valence: Any,
    true_valence: Any,
    pred_arousal: Any,
    true_arousal: Any,
    path: str | os.PathLike[str],
    title: str = "Valence / arousal",
) -> Path:
    """Two scatter panels (valence, arousal) of prediction vs. ground truth on [-1, 1].

    The identity line is drawn; each panel's title gives the CCC and the RMSE.
    """
    pairs = {
        "valence": (_array(pred_valence), _array(true_valence)),
        "arousal": (_array(pred_arousal), _array(true_arousal)),
    }
    for name, (p, t) in pairs.items():
        if len(p) != len(t):
            raise ValueError(f"{name}: {len(p)} predictions but {len(t)} targets")
    fig = Figure(figsize=(10.0, 5.0), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, (name, (p, t)) in zip(axes, pairs.items(), strict=True):
        alpha = 0.6 if len(p) <= 2000 else 0.25
        ax.scatter(t, p, s=8, alpha=alpha, edgecolors="none")
        ax.plot([-1, 1], [-1, 1], color="grey", linewidth=1, linestyle="--")
        ax.set_xlim(-1.05, 1.05)
        ax.set_ylim(-1.05, 1.05)
        ax.set_aspect("equal")
        ax.set_xlabel(f"true {name}")
        ax.set_ylabel(f"predicted {name}")
        rmse = float(np.sqrt(np.mean((p - t) ** 2))) if len(p) else math.nan
        ax.set_title(f"{name}: CCC {ccc(p, t):.3f}, RMSE {rmse:.3f} (n={len(p)})")
        ax.grid(True, alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)


@dataclass(frozen=True)
class ParetoPoint:
    """One model of a sweep: cost (e.g. MACs), quality (e.g. accuracy) and a label."""

    cost: float
    quality: float
    label: str
    #: Error-bar half-width on the quality (e.g. the 95% interval over seeds); NaN: none.
    err: float = math.nan


def pareto_front(costs: Sequence[float], qualities: Sequence[float]) -> list[int]:
    """Indices of the Pareto-optimal points (lower cost and higher quality are better).

    A point is on the front when no other point has a cost <= and a quality >= with at least
    one strict. Returned in order of increasing cost; NaN points are never on the front.
    """
    if len(costs) != len(qualities):
        raise ValueError(f"{len(costs)} costs but {len(qualities)} qualities")
    idx = [
        i
        for i in range(len(costs))
        if math.isfinite(float(costs[i])) and math.isfinite(float(qualities[i]))
    ]
    idx.sort(key=lambda i: (float(costs[i]), -float(qualities[i])))
    front: list[int] = []
    best = -math.inf
    for i in idx:
        if float(qualities[i]) > best:
            front.append(i)
            best = float(qualities[i])
    return front


def si_count(value: float, unit: str = "") -> str:
    """``2e7`` -> ``20 M``; ``1.3e9`` -> ``1.3 G`` (axis labels of MAC and parameter counts)."""
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:g} {prefix}{unit}"
    return f"{value:g} {unit}".rstrip()


def _place_labels(fig: Figure, ax: Any, usable: Sequence[ParetoPoint]) -> list[Any]:
    """Annotate every point so that no label overlaps another or leaves the figure: labels
    of points in the right part of the axes go to their left, and a label that would overlap
    one already placed moves up (or down) a line at a time."""
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    fig.canvas.draw()
    x0, x1 = ax.get_xlim()
    placed: list[Any] = []
    labels = []
    order = sorted(range(len(usable)), key=lambda i: (-usable[i].quality, usable[i].cost))
    for i in order:
        p = usable[i]
        frac = (math.log(p.cost) - math.log(x0)) / (math.log(x1) - math.log(x0))
        right = frac > 0.6
        text = ax.annotate(
            p.label,
            (p.cost, p.quality),
            textcoords="offset points",
            xytext=(-6 if right else 6, 4),
            ha="right" if right else "left",
            fontsize=8,
            annotation_clip=False,
        )
        for step in [k * sign for k in range(1, 12) for sign in (1, -1)]:
            box = text.get_window_extent(renderer).expanded(1.02, 1.1)
            if not any(box.overlaps(other) for other in placed):
                break
            text.set_position((-6 if right else 6, 4 + 10 * step))
        placed.append(text.get_window_extent(renderer).expanded(1.02, 1.1))
        labels.append(text)
    return labels


def save_pareto_png(
    points: Sequence[ParetoPoint],
    path: str | os.PathLike[str],
    x_label: str = "MACs",
    y_label: str = "accuracy",
    title: str = "Accuracy vs. cost",
) -> Path:
    """Scatter of quality vs. cost (log x, in K/M/G units) with labelled points, error bars
    where a point has ``err`` (e.g. a 95% interval over seeds) and the Pareto front (of the
    means) as a step. The legend sits below the axes, so it never covers a point, and labels
    neither overlap nor leave the image."""
    usable = [p for p in points if p.cost > 0 and math.isfinite(p.cost * p.quality)]
    if not usable:
        raise ValueError(
            "no point with a positive cost and a finite quality to plot "
            f"({len(points)} given); is the metric present in every job's metrics.json?"
        )
    fig = Figure(figsize=(8.0, 5.5), layout="constrained")
    FigureCanvasAgg(fig)  # a renderer to measure the labels with
    ax = fig.subplots()
    xs = [p.cost for p in usable]
    ys = [p.quality for p in usable]
    errs = [p.err if math.isfinite(p.err) else 0.0 for p in usable]
    front = pareto_front(xs, ys)
    on_front = set(front)
    for subset, color, label, z in (
        ([i for i in range(len(xs)) if i not in on_front], "tab:grey", "dominated", 2),
        (front, "tab:red", "Pareto front", 3),
    ):
        if not subset:
            continue
        ax.errorbar(
            [xs[i] for i in subset],
            [ys[i] for i in subset],
            yerr=[errs[i] for i in subset] if any(errs) else None,
            fmt="o",
            color=color,
            ecolor=color,
            capsize=3,
            label=label + (" (mean, 95% CI)" if any(errs) else ""),
            zorder=z,
        )
    if len(front) > 1:
        ax.step(
            [xs[i] for i in front],
            [ys[i] for i in front],
            where="post",
            color="tab:red",
            linewidth=1.2,
            zorder=1,
        )
    ax.set_xscale("log")
    lo, hi = min(xs), max(xs)
    ax.set_xlim(lo / 1.6, hi * 1.6)  # room for the labels at both ends
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: si_count(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.margins(y=0.12)
    ax.set_xlabel(f"{x_label} (log scale)")
    ax.set_ylabel(y_label)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    fig.legend(loc="outside lower center", ncols=2, frameon=False)
    _place_labels(fig, ax, usable)
    return _save(fig, path)
