"""Typed outputs and input specifications shared by every model in the zoo, and the batch
rows helper the data module and the Lightning modules share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch


class AffectOutput(NamedTuple):
    """Joint prediction of every fersuite model.

    ``expression`` holds logits of shape (B, C); ``valence`` and ``arousal`` have shape (B,)
    and are bounded to [-1, 1] by the heads that produce them (EmoNet's raw outputs are
    unbounded and are clamped when evaluated).
    """

    expression: torch.Tensor
    valence: torch.Tensor
    arousal: torch.Tensor


def select_rows(batch: Mapping[str, Any], keep: torch.Tensor) -> dict[str, Any]:
    """``batch`` (a dict of per-sample tensors) at the rows ``keep`` (a bool mask over the
    batch); entries that are not per-sample (not a tensor with ``len(keep)`` rows) unchanged."""
    n = len(keep)
    return {
        k: v[keep] if isinstance(v, torch.Tensor) and v.ndim >= 1 and len(v) == n else v
        for k, v in batch.items()
    }


@dataclass(frozen=True)
class InputSpec:
    """What a model expects as input: square side, channels, normalisation."""

    size: int
    channels: int
    mean: tuple[float, ...] = field(default=(0.5,))
    std: tuple[float, ...] = field(default=(0.5,))

    def shape(self, batch: int = 1) -> tuple[int, int, int, int]:
        return (batch, self.channels, self.size, self.size)
