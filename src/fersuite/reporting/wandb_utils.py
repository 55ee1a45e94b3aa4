"""Weights & Biases helpers that never fail a run: summaries and report media."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["update_wandb_summary", "wandb_loggers"]


def wandb_loggers(loggers: Iterable[Any]) -> list[Any]:
    """The Lightning ``WandbLogger`` instances among ``loggers``."""
    try:
        from lightning.pytorch.loggers import WandbLogger
    except ImportError:  # pragma: no cover - lightning always ships it
        return []
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
