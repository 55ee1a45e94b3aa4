"""Typed outputs and input specifications shared by every model in the zoo."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

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


@dataclass(frozen=True)
class InputSpec:
    """What a model expects as input: square side, channels, normalisation."""

    size: int
    channels: int
    mean: tuple[float, ...] = field(default=(0.5,))
    std: tuple[float, ...] = field(default=(0.5,))

    def shape(self, batch: int = 1) -> tuple[int, int, int, int]:
        return (batch, self.channels, self.size, self.size)
