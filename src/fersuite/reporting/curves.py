"""Learning curves of a sweep's groups: is the schedule long enough?

Each training job's CSV logger writes ``<job>/csv/metrics.csv`` with one row per validation
epoch. For a group of seeds (:mod:`fersuite.reporting.seeds`) the curve of a validation key
(e.g. ``val/acc``) is the mean over the seeds at each epoch, with the seeds' range as a band.
The convergence figures tell a flattened curve from a rising one:

- ``epochs``: validation epochs run, per seed (fewer than ``max_epochs`` when early stopping
  ended a run);
- ``best_epochs``: per seed, the epoch of the best value -- the checkpoint that is tested.

Epochs are numbered as Lightning numbers them, from 0: the same number as in the checkpoint
name (``best-epoch005.ckpt`` is epoch 5, the sixth) and in ``csv/metrics.csv``. The learning
curves' x axis uses the same numbers.
- ``late_gain``: best value of the last ``window`` epochs minus the best value before them
  (mean over seeds). Near zero or negative: the curve had flattened; clearly positive: it was
  still rising when training stopped.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fersuite.reporting.plots import _save
from fersuite.reporting.seeds import Group, mean_ci

__all__ = ["Convergence", "convergence", "group_curves", "read_curve", "save_curves_png"]

#: Where a training job's CSV logger writes its per-epoch metrics.
CURVE_FILE = Path("csv") / "metrics.csv"


def read_curve(job_dir: str | os.PathLike[str], key: str) -> list[float]:
    """``key`` at each epoch, in epoch order (the last value logged for an epoch wins); empty
    when the job has no metrics.csv or never logged ``key``."""
    path = Path(job_dir) / CURVE_FILE
    if not path.is_file():
        return []
    by_epoch: dict[int, float] = {}
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            value, epoch = row.get(key), row.get("epoch")
            if not value or not epoch:
                continue
            try:
                v, e = float(value), int(float(epoch))
            except ValueError:
                continue
            if math.isfinite(v):
                by_epoch[e] = v
    return [by_epoch[e] for e in sorted(by_epoch)]


def higher_is_better(key: str) -> bool:
    name = key.rsplit("/", 1)[-1]
    return not any(t in name for t in ("loss", "rmse", "mae", "ece"))


@dataclass(frozen=True)
class Convergence:
    """Convergence figures of one group (means over its seeds)."""

    group: str
    n: int
    #: validation epochs run, per seed
    epochs: tuple[int, ...]
    #: the epoch (from 0, as in the checkpoint names) of the best value, per seed
    best_epochs: tuple[int, ...]
    best: float
    late_gain: float
    late_gain_ci95: float

    def row(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "n": self.n,
            "epochs": " ".join(map(str, self.epochs)),
            "best_epochs": " ".join(map(str, self.best_epochs)),
            "best": self.best,
            "late_gain": self.late_gain,
            "late_gain_ci95": None if math.isnan(self.late_gain_ci95) else self.late_gain_ci95,
        }


def group_curves(group: Group, key: str) -> list[list[float]]:
    """The curve of ``key`` of every job of ``group`` that logged it."""
    return [c for c in (read_curve(j.path, key) for j in group.jobs) if c]


def convergence(
    group: Group, key: str, window: int = 3, curves: list[list[float]] | None = None
) -> Convergence | None:
    """The group's convergence figures for ``key`` (None when no job logged it); ``curves``:
    the group's curves when already read (:func:`group_curves`)."""
    curves = group_curves(group, key) if curves is None else curves
    if not curves:
        return None
    pick = max if higher_is_better(key) else min
    sign = 1.0 if higher_is_better(key) else -1.0
    best_epochs, bests, gains = [], [], []
    for c in curves:
        b = pick(c)
        best_epochs.append(c.index(b))
        bests.append(b)
        if len(c) > window:
            gains.append(sign * (pick(c[-window:]) - pick(c[:-window])))
    gain = mean_ci(gains)
    return Convergence(
        group=group.name,
        n=len(curves),
        epochs=tuple(len(c) for c in curves),
        best_epochs=tuple(best_epochs),
        best=sum(bests) / len(bests),
        late_gain=gain.mean,
        late_gain_ci95=gain.ci95,
    )


def save_curves_png(
    groups: Sequence[Group],
    key: str,
    path: str | os.PathLike[str],
    curves: Sequence[list[list[float]]] | None = None,
) -> Path | None:
    """One line per group (mean over seeds at each epoch) with the seeds' range as a band;
    None when no job logged ``key``. ``curves``: each group's curves when already read."""

    read = curves if curves is not None else [group_curves(g, key) for g in groups]
    series = list(zip(groups, read, strict=True))
    series = [(g, cs) for g, cs in series if cs]
    if not series:
        return None
    fig = Figure(figsize=(8.0, 5.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for g, cs in series:
        length = max(len(c) for c in cs)
        epochs, mean, lo, hi = [], [], [], []
        for e in range(length):
            vals = [c[e] for c in cs if len(c) > e]
            epochs.append(e)
            mean.append(sum(vals) / len(vals))
            lo.append(min(vals))
            hi.append(max(vals))
        (line,) = ax.plot(epochs, mean, marker="o", markersize=3, label=f"{g.name} (n={len(cs)})")
        if len(cs) > 1:
            ax.fill_between(epochs, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
    ax.set_xlabel("epoch (from 0, as in the checkpoint names)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set_ylabel(f"{key} (mean over seeds; band: min-max)")
    ax.set_title(f"Learning curves: {key}")
    ax.grid(True, alpha=0.3)
    fig.legend(loc="outside lower center", ncols=2, frameon=False, fontsize="small")
    return _save(fig, path)
