"""One registry for every architecture of the zoo: ``create_model(arch, **kwargs)``."""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from fersuite.card import BOUNDS

#: arch name -> "module:attribute" of its constructor (imported lazily).
_REGISTRY: dict[str, str] = {
    "timm": "fersuite.models.timm_backbone:TimmAffectNet",
    "mit_fer": "fersuite.models.mit_fer:MiTFER",
    "lightweight_cnn": "fersuite.models.lightweight_cnn:LightweightCNN",
    "emonet": "fersuite.models.emonet:EmoNet",
}


@dataclass(frozen=True)
class Num:
    """A number in ``lo..hi`` (an integer multiple of ``step`` when ``integer``)."""

    lo: float
    hi: float
    integer: bool = False
    optional: bool = False
    step: int = 1

    def problem(self, value: Any) -> str | None:
        if value is None and self.optional:
            return None
        kind = "an integer" if self.integer else "a number"
        ok = isinstance(value, int) if self.integer else isinstance(value, int | float)
        if isinstance(value, bool) or not ok or not self.lo <= value <= self.hi:
            step = f" (a multiple of {self.step})" if self.step > 1 else ""
            return f"expected {kind} in {self.lo:g}..{self.hi:g}{step}"
        if isinstance(value, float) and not math.isfinite(value):
            return "expected a finite number"
        if self.integer and value % self.step:
            return f"expected a multiple of {self.step}"
        return None


@dataclass(frozen=True)
class OneOf:
    """One of ``values``."""

    values: tuple[Any, ...]

    def problem(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, str | int) or value not in self.values:
            return f"expected one of {', '.join(map(str, self.values))}"
        return None


@dataclass(frozen=True)
class Rows:
    """A list of ``1..max_rows`` items, each a number (``cols`` of one) or a list whose
    entries fit ``cols`` in order."""

    max_rows: int
    cols: tuple[Num | OneOf, ...]
    optional: bool = False

    def problem(self, value: Any) -> str | None:
        if value is None and self.optional:
            return None
        if not isinstance(value, list | tuple) or not 1 <= len(value) <= self.max_rows:
            return f"expected a list of 1..{self.max_rows} entries"
        for i, row in enumerate(value):
            items = [row] if len(self.cols) == 1 else row
            if not isinstance(items, list | tuple) or len(items) != len(self.cols):
                return f"[{i}]: expected {len(self.cols)} values"
            for j, (col, item) in enumerate(zip(self.cols, items, strict=True)):
                problem = col.problem(item)
                if problem:
                    return f"[{i}]{'' if len(self.cols) == 1 else f'[{j}]'}: {problem}"
        return None


Range = Num | OneOf | Rows

_SIDE = Num(1, BOUNDS.max_side, integer=True)
_RATE = Num(0.0, 1.0)
_COMMON: dict[str, Range] = {
    "num_classes": Num(1, BOUNDS.max_classes, integer=True, optional=True),
    "in_chans": OneOf(BOUNDS.channels),
    "input_size": _SIDE,
    "drop_rate": _RATE,
    "drop_path_rate": Num(0.0, 1.0, optional=True),
}

#: The ranges of every architecture's keyword values that size what a rebuild allocates,
#: checked (:func:`fersuite.checkpoint.check_model_card`) before a model read from a file is
#: built. Keys not listed are checked for their type only.
KWARG_RANGES: dict[str, dict[str, Range]] = {
    "lightweight_cnn": {
        **_COMMON,
        "input_size": Num(32, BOUNDS.max_side, integer=True),
        "width_mult": Num(0.01, 2.0),
        "expansion_channels": Num(1, 8192, integer=True, optional=True),
        # (expansion ratio, channels, repeats, stride) per stage; the default has 6 stages
        "bottlenecks": Rows(
            8,
            (Num(1, 6), Num(1, 256, integer=True), Num(1, 4, integer=True), OneOf((1, 2))),
        ),
    },
    "mit_fer": {
        **_COMMON,
        "variant": OneOf(("b0", "b1", "b2", "b3", "b4", "b5")),
        "fusion": OneOf(("multiscale", "last")),
        "fusion_dim": Num(1, 1024, integer=True),
        "fusion_stride": OneOf((4, 8, 16, 32)),
    },
    "timm": {
        **_COMMON,
        "mean": Rows(3, (Num(*BOUNDS.mean),), optional=True),
        "std": Rows(3, (Num(*BOUNDS.std),), optional=True),
    },
    "emonet": {
        **_COMMON,
        "num_expressions": Num(1, BOUNDS.max_classes, integer=True),
        "num_stacks": Num(1, 4, integer=True),
        "num_emo_blocks": Num(1, 8, integer=True),
        "in_chans": OneOf((3,)),
        "input_size": Num(64, BOUNDS.max_side, integer=True, step=64),
    },
}


def kwarg_problem(arch: str, kwargs: Mapping[str, Any]) -> str | None:
    """``"<key>=<value>: <expected>"`` for the first keyword value of ``arch`` outside its
    declared range (:data:`KWARG_RANGES`); None when all are inside."""
    ranges = KWARG_RANGES.get(arch, _COMMON)
    for key, value in kwargs.items():
        rule = ranges.get(key)
        problem = rule.problem(value) if rule is not None else None
        if problem and problem.startswith("["):  # an entry of a list
            return f"{key}{problem}"
        if problem:
            shown = repr(value) if isinstance(value, int | float | str | None) else "[...]"
            return f"{key}={shown[:40]}: {problem}"
    return None


def register_model(arch: str, target: str) -> None:
    """Register ``target`` ("package.module:Class") under ``arch``."""
    _REGISTRY[arch] = target


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_model_class(arch: str) -> Callable[..., nn.Module]:
    if arch not in _REGISTRY:
        raise ValueError(f"model.arch={arch!r} is not a known architecture; known: {list_models()}")
    module_name, attr = _REGISTRY[arch].split(":")
    return getattr(importlib.import_module(module_name), attr)  # type: ignore[no-any-return]


def create_model(arch: str, **kwargs: Any) -> nn.Module:
    """Build the architecture ``arch`` with uniform keyword arguments
    (``num_classes``, ``in_chans``, ``input_size``, ``pretrained_path``, ...)."""
    return get_model_class(arch)(**kwargs)
