"""Learning-rate schedules built from config (``_partial_: true``)."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(
    optimizer: Optimizer,
    total_steps: int,
    warmup_steps: int | None = None,
    warmup_fraction: float = 0.05,
    min_lr_ratio: float = 0.01,
) -> LambdaLR:
    """Linear warm-up then cosine decay to ``min_lr_ratio`` x the base LR (stepped per batch)."""
    if total_steps < 1:
        raise ValueError(f"scheduler total_steps={total_steps}; expected >= 1")
    if not 0.0 <= warmup_fraction < 1.0:
        raise ValueError(f"scheduler.warmup_fraction={warmup_fraction}; expected a value in [0, 1)")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"scheduler.min_lr_ratio={min_lr_ratio}; expected a value in [0, 1]")
    warm = warmup_steps if warmup_steps is not None else round(warmup_fraction * total_steps)

    def factor(step: int) -> float:
        if warm > 0 and step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
