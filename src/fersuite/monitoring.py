"""Which way a monitored metric improves: one answer for the checkpoint, the module's
``<monitor>_best`` and an Optuna search.

``monitor_direction(name, override)``: ``override`` (``monitor_mode``: ``min`` | ``max``) when
set; otherwise inferred from the metric's name: ``loss``, ``rmse``, ``mae``, ``mse`` → ``min``;
``acc``, ``f1``, ``ccc``, ``pcc``, ``sagr`` → ``max``; anything else is a
:class:`~fersuite.errors.ConfigError` asking for ``monitor_mode``.

The OmegaConf resolvers ``${fersuite.monitor_mode:<metric>,<override>}`` (``min`` | ``max``, for
``ModelCheckpoint.mode``) and ``${fersuite.optuna_direction:<metric>,<monitor>,<override>}``
(``minimize`` | ``maximize``) are registered when :mod:`fersuite` is imported.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from omegaconf import OmegaConf

from fersuite.errors import ConfigError

__all__ = [
    "HIGHER_IS_BETTER",
    "LOWER_IS_BETTER",
    "monitor_direction",
    "optuna_direction",
    "register_resolvers",
]

Direction = Literal["min", "max"]

#: Name parts of metrics where lower is better / higher is better.
LOWER_IS_BETTER = frozenset({"loss", "rmse", "mae", "mse", "ece"})
HIGHER_IS_BETTER = frozenset({"acc", "f1", "ccc", "pcc", "sagr"})
MODES = ("min", "max")


def _infer(name: str) -> Direction | None:
    leaf = name.rsplit("/", 1)[-1]
    parts = set(re.split(r"[^a-z0-9]+", leaf.lower()))
    low, high = bool(parts & LOWER_IS_BETTER), bool(parts & HIGHER_IS_BETTER)
    if low == high:  # neither, or both (ambiguous)
        return None
    return "min" if low else "max"


def monitor_direction(name: str, override: str | None = None) -> Direction:
    """``min`` or ``max`` for the metric ``name`` (``override``: ``monitor_mode``)."""
    if override is not None:
        if override not in MODES:
            raise ConfigError(f"monitor_mode={override!r}; expected null (infer), 'min' or 'max'")
        return override  # type: ignore[return-value]
    direction = _infer(str(name))
    if direction is None:
        raise ConfigError(
            f"monitor={name}: cannot tell whether lower or higher is better; set "
            "monitor_mode=min or monitor_mode=max"
        )
    return direction


def optuna_direction(metric: str, monitor: str | None = None, override: str | None = None) -> str:
    """``minimize`` / ``maximize`` for a search optimising ``metric`` (e.g. ``val/loss_best``).

    ``<monitor>_best`` follows the monitor (and ``monitor_mode``); other metrics are inferred
    from their names.
    """
    name = str(metric)
    if monitor is not None and name in (str(monitor), f"{monitor}_best"):
        direction = monitor_direction(str(monitor), override)
    else:
        direction = monitor_direction(name.removesuffix("_best"))
    return "minimize" if direction == "min" else "maximize"


def _none(value: Any) -> Any:
    return None if value in (None, "null", "None", "") else value


def register_resolvers() -> None:

    if not OmegaConf.has_resolver("fersuite.monitor_mode"):
        OmegaConf.register_new_resolver(
            "fersuite.monitor_mode", lambda name, mode=None: monitor_direction(name, _none(mode))
        )
    if not OmegaConf.has_resolver("fersuite.optuna_direction"):
        OmegaConf.register_new_resolver(
            "fersuite.optuna_direction",
            lambda metric, monitor=None, mode=None: optuna_direction(
                metric, _none(monitor), _none(mode)
            ),
        )
