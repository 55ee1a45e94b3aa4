"""Early stopping on the run's monitor (``early_stopping.patience``): Lightning's
``EarlyStopping``, in the direction of :func:`fersuite.monitoring.monitor_direction`."""

from __future__ import annotations

from lightning.pytorch.callbacks import EarlyStopping

from fersuite.errors import ConfigError
from fersuite.monitoring import monitor_direction

__all__ = ["early_stopping_callback"]


def early_stopping_callback(
    monitor: str = "val/acc",
    patience: int | None = None,
    monitor_mode: str | None = None,
    min_delta: float = 0.0,
) -> EarlyStopping | None:
    """Stop when ``monitor`` has not improved for ``patience`` validation epochs (None: off).

    The checkpoint's callback state keeps the wait count and best score, so a resumed run
    stops where the uninterrupted one would."""
    if patience is None:
        return None
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
        raise ConfigError(
            f"early_stopping.patience={patience!r}; expected an integer >= 1 or null (off)"
        )
    if min_delta < 0:
        raise ConfigError(f"early_stopping.min_delta={min_delta!r}; expected >= 0")
    return EarlyStopping(
        monitor=monitor,
        mode=monitor_direction(monitor, monitor_mode),
        patience=patience,
        min_delta=float(min_delta),
        check_finite=True,
    )
