"""All affect metrics of one stage: classification + valence/arousal regression."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import MeanSquaredError, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
)
from torchmetrics.regression import ConcordanceCorrCoef, PearsonCorrCoef

from fersuite.metrics.sagr import SignAgreement
from fersuite.types import AffectOutput


def _regression(prefix: str) -> MetricCollection:
    return MetricCollection(
        {
            "rmse": MeanSquaredError(squared=False),
            "ccc": ConcordanceCorrCoef(),
            "pcc": PearsonCorrCoef(),
            "sagr": SignAgreement(),
        },
        prefix=prefix,
    )


class AffectMetrics(nn.Module):
    """``update(out, batch)`` / ``compute()`` / ``reset()`` over one stage.

    Keys: ``acc``, ``f1_macro``, ``balanced_acc`` and, with VA, ``valence_rmse``,
    ``valence_ccc``, ``valence_pcc``, ``valence_sagr`` (same for arousal). The confusion
    matrix is returned separately by :meth:`confusion` (it is not a scalar).
    """

    def __init__(self, num_classes: int, has_va: bool, confusion: bool = True) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.has_va = has_va
        self.classification = MetricCollection(
            {
                "acc": MulticlassAccuracy(num_classes, average="micro"),
                "f1_macro": MulticlassF1Score(num_classes, average="macro"),
                "balanced_acc": MulticlassAccuracy(num_classes, average="macro"),
            }
        )
        self.confmat = MulticlassConfusionMatrix(num_classes) if confusion else None
        self.valence = _regression("valence_") if has_va else None
        self.arousal = _regression("arousal_") if has_va else None

    @torch.no_grad()
    def update(self, out: AffectOutput, batch: dict[str, torch.Tensor]) -> None:
        target = batch["expression"]
        if target.ndim == 2:  # soft (vote-distribution) targets
            target = target.argmax(dim=1)
        preds = out.expression.detach()
        self.classification.update(preds, target)
        if self.confmat is not None:
            self.confmat.update(preds, target)
        if self.valence is not None and self.arousal is not None and "valence" in batch:
            mask = batch.get("va_mask")
            if mask is None:
                mask = torch.ones_like(batch["valence"], dtype=torch.bool)
            if mask.any():
                v_pred = out.valence.detach().float().clamp(-1, 1)[mask]
                a_pred = out.arousal.detach().float().clamp(-1, 1)[mask]
                self.valence.update(v_pred, batch["valence"][mask].float())
                self.arousal.update(a_pred, batch["arousal"][mask].float())

    def compute(self) -> dict[str, torch.Tensor]:
        result = dict(self.classification.compute())
        # Decided statically (not by the local sample count) so every DDP rank takes part
        # in the same collective syncs.
        if self.valence is not None and self.arousal is not None:
            result.update(self.valence.compute())
            result.update(self.arousal.compute())
        return result

    def confusion(self) -> torch.Tensor | None:
        return None if self.confmat is None else self.confmat.compute()

    def reset(self) -> None:
        self.classification.reset()
        if self.confmat is not None:
            self.confmat.reset()
        if self.valence is not None and self.arousal is not None:
            self.valence.reset()
            self.arousal.reset()
