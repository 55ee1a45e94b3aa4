"""SAGR: sign agreement between predicted and true valence/arousal."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class SignAgreement(Metric):
    """Fraction of samples whose prediction has the same sign as the target.

    Signs follow ``torch.sign`` (zero is its own sign), like ``numpy.sign``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    agree: torch.Tensor
    total: torch.Tensor

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.add_state("agree", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        if preds.shape != target.shape:
            raise ValueError(
                f"SAGR needs equal shapes, got {tuple(preds.shape)} and {tuple(target.shape)}"
            )
        self.agree += (torch.sign(preds) == torch.sign(target)).sum()
        self.total += target.numel()

    def compute(self) -> torch.Tensor:
        if self.total == 0:
            return torch.tensor(float("nan"))
        return self.agree.float() / self.total
