"""Reports of runs and sweeps: confusion matrices, VA scatter, per-class and sweep tables,
Pareto plots (PNG via matplotlib's Agg canvas; CSV/Markdown/JSON written atomically)."""

from fersuite.reporting.jobs import JobResult, collect_sweep, model_label
from fersuite.reporting.plots import (
    ParetoPoint,
    ccc,
    pareto_front,
    save_confusion_png,
    save_pareto_png,
    save_va_scatter_png,
)
from fersuite.reporting.run_report import RunReport, VAPairs, write_run_report
from fersuite.reporting.sweep import SweepReport, write_sweep_report
from fersuite.reporting.tables import markdown_table, per_class_rows, write_csv
from fersuite.reporting.wandb_utils import update_wandb_summary, wandb_loggers

__all__ = [
    "JobResult",
    "ParetoPoint",
    "RunReport",
    "SweepReport",
    "VAPairs",
    "ccc",
    "collect_sweep",
    "markdown_table",
    "model_label",
    "pareto_front",
    "per_class_rows",
    "save_confusion_png",
    "save_pareto_png",
    "save_va_scatter_png",
    "update_wandb_summary",
    "wandb_loggers",
    "write_csv",
    "write_run_report",
    "write_sweep_report",
]
