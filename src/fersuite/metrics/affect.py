"""All affect metrics of one stage: classification + valence/arousal regression."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import MeanSquaredError, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
)
from torchmetrics.regression import ConcordanceCorrCoef, PearsonCorrCoef
from torchmetrics.utilities import dim_zero_cat

from fersuite.metrics.sagr import SignAgreement
from fersuite.types import AffectOutput

#: Equal-width confidence bins of the expected calibration error and the reliability diagram.
ECE_BINS = 15


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
    matrix is returned separately by :meth:`confusion` (it is not a scalar). With
    ``confusion`` (the val/test stages) also ``ece``: the expected calibration error of the
    softmax top-1 confidence over :data:`ECE_BINS` equal-width bins (torchmetrics'
    ``MulticlassCalibrationError``, L1), whose bins :meth:`reliability` returns.
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
        self.calibration = (
            MulticlassCalibrationError(num_classes, n_bins=ECE_BINS, norm="l1")
            if confusion
            else None
        )
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
        if self.calibration is not None:
            self.calibration.update(preds.float().softmax(dim=1), target)
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
        if self.calibration is not None:
            result["ece"] = self.calibration.compute()
        # Decided statically (not by the local sample count) so every DDP rank takes part
        # in the same collective syncs.
        if self.valence is not None and self.arousal is not None:
            result.update(self.valence.compute())
            result.update(self.arousal.compute())
        return result

    def confusion(self) -> torch.Tensor | None:
        return None if self.confmat is None else self.confmat.compute()

    def reliability(self) -> torch.Tensor | None:
        """(ECE_BINS, 3): per confidence bin the sample count, mean confidence and accuracy
        (0 where a bin is empty), over every rank's samples (a collective under DDP)."""
        cal = self.calibration
        if cal is None:
            return None

        def cat(state: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
            # a list per rank; after a DDP sync torchmetrics leaves one concatenated tensor
            if isinstance(state, torch.Tensor):
                return state.float()
            return dim_zero_cat(state).float() if len(state) else torch.zeros(0)

        with cal.sync_context():
            conf = cat(cal.confidences)
            acc = cat(cal.accuracies)
        edges = torch.linspace(0, 1, ECE_BINS + 1, device=conf.device)
        index = (torch.bucketize(conf, edges, right=True) - 1).clamp(0, ECE_BINS - 1)
        count = torch.zeros(ECE_BINS, device=conf.device).index_add_(
            0, index, torch.ones_like(conf)
        )
        mean_conf = torch.zeros(ECE_BINS, device=conf.device).index_add_(0, index, conf)
        mean_acc = torch.zeros(ECE_BINS, device=conf.device).index_add_(0, index, acc)
        safe = count.clamp_min(1)
        return torch.stack([count, mean_conf / safe, mean_acc / safe], dim=1)

    def reset(self) -> None:
        self.classification.reset()
        if self.confmat is not None:
            self.confmat.reset()
        if self.calibration is not None:
            self.calibration.reset()
        if self.valence is not None and self.arousal is not None:
            self.valence.reset()
            self.arousal.reset()
