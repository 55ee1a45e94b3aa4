"""Weights & Biases helpers that never fail a run: summaries and report media."""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.loggers import WandbLogger

from fersuite.loggers import resolve_wandb_mode, wandb_where
from fersuite.reporting.tables import per_class_rows

log = logging.getLogger(__name__)

__all__ = [
    "log_evaluation_charts",
    "update_wandb_summary",
    "upload_sweep_report",
    "wandb_loggers",
]

#: At most this many valence/arousal points go into a W&B chart (an evenly spaced subset).
MAX_VA_POINTS = 2000


def wandb_loggers(loggers: Iterable[Any]) -> list[Any]:
    """The Lightning ``WandbLogger`` instances among ``loggers``."""
    return [lg for lg in loggers if isinstance(lg, WandbLogger)]


def update_wandb_summary(metrics: Mapping[str, Any], run: Any = None) -> bool:
    """Copy finite scalar ``metrics`` into the summary of ``run`` (default: ``wandb.run``).

    Returns True when a run was active and its summary was updated. Errors are logged, not
    raised: a summary must never fail a finished training run.
    """
    if run is None:
        try:
            import wandb
        except ImportError:
            return False
        run = wandb.run
    if run is None:
        return False
    values: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(float(value)):
            values[key] = float(value)
    try:
        run.summary.update(values)
    except Exception as exc:  # noqa: BLE001
        log.warning("could not update the W&B summary: %s", exc)
        return False
    return True


def log_evaluation_charts(
    logger: Any,
    stage: str,
    confusion: Any,
    class_names: Sequence[str],
    va: Any = None,
    step: int | None = None,
) -> None:
    """Log one evaluation to a Lightning ``WandbLogger``: an interactive confusion matrix
    (``reports/confusion_matrix_<stage>``), the per-class table (``reports/per_class_<stage>``)
    and, with valence/arousal pairs (:class:`~fersuite.reporting.run_report.VAPairs`), a table
    of predicted vs true values with one scatter chart each for valence and arousal
    (``reports/valence_<stage>``, ``reports/arousal_<stage>``)."""
    import wandb

    cm = np.asarray(confusion, dtype=np.int64)
    rows, cols = np.nonzero(cm)
    counts = cm[rows, cols]
    charts: dict[str, Any] = {
        f"reports/confusion_matrix_{stage}": wandb.plot.confusion_matrix(
            y_true=np.repeat(rows, counts).tolist(),
            preds=np.repeat(cols, counts).tolist(),
            class_names=list(class_names),
            title=f"confusion matrix ({stage})",
        )
    }
    columns = ["class", "support", "accuracy", "precision", "f1"]
    table = [[row[c] for c in columns] for row in per_class_rows(cm, class_names)]
    charts[f"reports/per_class_{stage}"] = wandb.Table(columns=columns, data=table)
    if va is not None and len(va.true_valence):
        n = len(va.true_valence)
        keep = np.linspace(0, n - 1, min(n, MAX_VA_POINTS)).round().astype(int)
        va_cols = ["true_valence", "pred_valence", "true_arousal", "pred_arousal"]
        arrays = (va.true_valence, va.pred_valence, va.true_arousal, va.pred_arousal)
        points = wandb.Table(
            columns=va_cols, data=np.stack([a[keep] for a in arrays], 1).astype(float).tolist()
        )
        charts[f"reports/va_points_{stage}"] = points
        for dim in ("valence", "arousal"):
            charts[f"reports/{dim}_{stage}"] = wandb.plot.scatter(
                points, f"true_{dim}", f"pred_{dim}", title=f"{dim}: predicted vs true ({stage})"
            )
    logger.log_metrics(charts, step=step)


def upload_sweep_report(report: Any, logger_cfg: Mapping[str, Any], sweep_dir: str) -> str | None:
    """Upload a sweep report (``report.csv`` as a W&B table, the Pareto plot as an image) as
    its own W&B run (``job_type=sweep-report``, grouped with the sweep's jobs), with the
    project, entity and mode of the sweep's ``logger.wandb`` config. Never raises.

    Returns where the report went (:func:`fersuite.loggers.wandb_where`: uploaded, or saved
    offline with the command that uploads it); None when nothing was logged."""
    try:
        import wandb

        mode = resolve_wandb_mode(str(logger_cfg.get("mode") or "auto"))
        if mode == "disabled":
            return None
        with open(report.paths["csv"], newline="") as fh:
            rows = list(csv.reader(fh))
        run = wandb.init(
            project=logger_cfg.get("project") or "fersuite",
            entity=logger_cfg.get("entity"),
            group=Path(sweep_dir).name,
            job_type="sweep-report",
            name=f"report-{Path(sweep_dir).name}",
            dir=sweep_dir,
            mode=mode,
            reinit="finish_previous",
        )
        try:
            media: dict[str, Any] = {
                "sweep/report": wandb.Table(columns=rows[0], data=rows[1:]) if rows else None
            }
            if "pareto" in report.paths:
                media["sweep/pareto"] = wandb.Image(str(report.paths["pareto"]))
            run.log({k: v for k, v in media.items() if v is not None})
            where = wandb_where(run)
        finally:
            run.finish()
    except Exception as exc:  # noqa: BLE001 - an upload must never fail a finished sweep
        log.warning("could not upload the sweep report to W&B: %s", exc)
        return None
    return where
