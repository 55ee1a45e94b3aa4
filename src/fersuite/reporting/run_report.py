"""The report of one evaluated stage of a run: confusion matrix, VA scatter, per-class table."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fersuite.reporting.plots import (
    save_confusion_png,
    save_reliability_png,
    save_va_scatter_png,
)
from fersuite.reporting.tables import PER_CLASS_COLUMNS, per_class_rows, write_csv

__all__ = ["RunReport", "VAPairs", "write_run_report"]


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
    confusion_png: Path
    per_class_csv: Path
    va_png: Path | None
    per_class: list[dict[str, Any]] = field(default_factory=list)
    reliability_png: Path | None = None

    def paths(self) -> dict[str, Path]:
        out = {"confusion": self.confusion_png, "per_class": self.per_class_csv}
        if self.va_png is not None:
            out["va_scatter"] = self.va_png
        if self.reliability_png is not None:
            out["reliability"] = self.reliability_png
        return out


def write_run_report(
    out_dir: str | os.PathLike[str],
    stage: str,
    confusion: Any,
    class_names: Sequence[str],
    va: VAPairs | None = None,
    reliability: Any = None,
) -> RunReport:
    """Write ``confusion_<stage>.png``, ``per_class_<stage>.csv`` and (with VA pairs)
    ``va_<stage>.png`` into ``out_dir``.

    ``confusion`` is a (C, C) count matrix, rows = true class, columns = prediction, in the
    order of ``class_names``. ``reliability`` (confidence bins, see
    :func:`~fersuite.reporting.plots.save_reliability_png`) adds ``reliability_<stage>.png``.
    """
    out = Path(out_dir)
    rows = per_class_rows(confusion, class_names)
    conf_png = save_confusion_png(
        confusion, class_names, out / f"confusion_{stage}.png", title=f"{stage} confusion"
    )
    csv_path = out / f"per_class_{stage}.csv"
    write_csv(csv_path, rows, PER_CLASS_COLUMNS)
    va_png = None
    if va is not None and len(va) > 0:
        va_png = save_va_scatter_png(
            va.pred_valence,
            va.true_valence,
            va.pred_arousal,
            va.true_arousal,
            out / f"va_{stage}.png",
            title=f"{stage}: prediction vs. truth",
        )
    rel_png = None
    if reliability is not None:
        rel_png = save_reliability_png(
            reliability, out / f"reliability_{stage}.png", title=f"{stage} reliability"
        )
    return RunReport(stage, conf_png, csv_path, va_png, rows, rel_png)
