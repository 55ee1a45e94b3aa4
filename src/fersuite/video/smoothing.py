"""Temporal smoothing of per-face signals (expression probabilities, valence, arousal).

``none`` passes values through; ``ema`` is the exponential moving average
``s_t = alpha * x_t + (1 - alpha) * s_{t-1}`` (``s_0 = x_0``); ``one_euro`` is the 1€ filter
(Casiez, Roussel and Vogel, CHI 2012): a low-pass filter whose cutoff rises with the
signal's speed, ``cutoff = min_cutoff + beta * |dx/dt|`` (the speed itself low-passed at
``d_cutoff``), each step's smoothing factor ``a = 1 / (1 + 1 / (2 pi cutoff dt))``. Values
are numpy vectors, filtered element-wise; ``t`` is in seconds.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from fersuite.errors import PredictError

__all__ = [
    "SMOOTHING",
    "Ema",
    "FaceSmoother",
    "OneEuro",
    "Passthrough",
    "SmoothingSettings",
]

SMOOTHING = ("none", "ema", "one_euro")


class Filter(Protocol):
    def __call__(self, x: np.ndarray, t: float) -> np.ndarray: ...


class Passthrough:
    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        return np.asarray(x, dtype=np.float64)


class Ema:
    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self._s: np.ndarray | None = None

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        self._s = x.copy() if self._s is None else self.alpha * x + (1 - self.alpha) * self._s
        return self._s.copy()


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuro:
    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0) -> None:
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t = 0.0

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or t <= self._t:  # first sample (or a repeated time): start here
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return x.copy()
        dt = t - self._t
        assert self._dx is not None
        dx = (x - self._x) / dt
        a_d = _alpha(self.d_cutoff, dt)
        self._dx = a_d * dx + (1 - a_d) * self._dx
        a = _alpha(self.min_cutoff + self.beta * np.abs(self._dx), dt)
        self._x = a * x + (1 - a) * self._x
        self._t = t
        return self._x.copy()


@dataclass(frozen=True)
class SmoothingSettings:
    kind: str = "none"
    ema_alpha: float = 0.3
    one_euro_min_cutoff: float = 1.0
    one_euro_beta: float = 0.05
    one_euro_d_cutoff: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in SMOOTHING:
            raise PredictError(f"smoothing={self.kind!r}; expected one of {'|'.join(SMOOTHING)}")
        for key, lo, hi in (
            ("ema_alpha", 0.0, 1.0),
            ("one_euro_min_cutoff", 0.0, math.inf),
            ("one_euro_beta", -1e-300, math.inf),
            ("one_euro_d_cutoff", 0.0, math.inf),
        ):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int | float) or not lo < v <= hi:
                want = "in (0, 1]" if key == "ema_alpha" else ">= 0" if "beta" in key else "> 0"
                raise PredictError(f"{key}={v!r}; expected a number {want}")

    def make(self) -> Filter:
        if self.kind == "ema":
            return Ema(float(self.ema_alpha))
        if self.kind == "one_euro":
            return OneEuro(
                float(self.one_euro_min_cutoff),
                float(self.one_euro_beta),
                float(self.one_euro_d_cutoff),
            )
        return Passthrough()


@dataclass
class FaceSmoother:
    """One filter per key, e.g. (face id, signal); its state starts at the key's first value."""

    settings: SmoothingSettings
    _filters: dict[Hashable, Filter] = field(default_factory=dict)

    def __call__(self, key: Hashable, x: np.ndarray, t: float) -> np.ndarray:
        f = self._filters.get(key)
        if f is None:
            f = self._filters[key] = self.settings.make()
        return f(x, t)
