"""All affect metrics of one stage: classification + valence/arousal regression."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchmetrics import MeanSquaredError, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassRecall,
)
from torchmetrics.regression import ConcordanceCorrCoef, PearsonCorrCoef
from torchmetrics.utilities import dim_zero_cat

from fersuite.metrics.sagr import SignAgreement
from fersuite.types import AffectOutput

#: Equal-width confidence bins of the expected calibration error and the reliability diagram.
ECE_BINS = 15


class ClassRecall(MulticlassRecall):
    """Recall of each class, ``tp / (tp + fn)`` (torchmetrics' ``MulticlassRecall``,
    ``average="none"``), NaN for a class absent from the targets (its recall is undefined)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes, average="none")

    def compute(self) -> torch.Tensor:
        recall = super().compute().float()
        tp, _, _, fn = self._final_state()
        return torch.where(tp + fn > 0, recall, torch.full_like(recall, float("nan")))


class BalancedAccuracy(ClassRecall):
    """Balanced accuracy: the mean recall over the classes present in the targets.

    A class absent from the targets has no recall and is left out of the mean, even when it
    was predicted (its false positives lower the recall of the true classes instead); this is
    ``sklearn.metrics.balanced_accuracy_score`` (``adjusted=False``). torchmetrics'
    ``MulticlassRecall(average="macro")`` differs there: it counts such a class as recall 0.
    NaN when no target was seen.
    """

    def compute(self) -> torch.Tensor:
        recall = super().compute()
        present = ~recall.isnan()
        if not bool(present.any()):
            return recall.new_tensor(float("nan"))
        return recall[present].mean()


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

    Keys: ``acc``, ``f1_macro``, ``balanced_acc`` (:class:`BalancedAccuracy`: classes absent
    from the targets are left out) and, with VA, ``valence_rmse``,
    ``valence_ccc``, ``valence_pcc``, ``valence_sagr`` (same for arousal). With
    ``class_names`` also ``recall_<name>``: the recall of each class present in the targets
    (:class:`ClassRecall`; an absent class has no key). The confusion
    matrix is returned separately by :meth:`confusion` (it is not a scalar). With
    ``confusion`` (the val/test stages) also ``ece``: the expected calibration error of the
    softmax top-1 confidence over :data:`ECE_BINS` equal-width bins (torchmetrics'
    ``MulticlassCalibrationError``, L1), whose bins :meth:`reliability` returns.
    """

    def __init__(
        self,
        num_classes: int,
        has_va: bool,
        confusion: bool = True,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.has_va = has_va
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.class_names = None if class_names is None else tuple(class_names)
        self.classification = MetricCollection(
            {
                "acc": MulticlassAccuracy(num_classes, average="micro"),
                "f1_macro": MulticlassF1Score(num_classes, average="macro"),
                "balanced_acc": BalancedAccuracy(num_classes),
            }
        )
        self.recall = ClassRecall(num_classes) if class_names is not None else None
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
        if self.recall is not None:
            self.recall.update(preds, target)
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
        if self.recall is not None and self.class_names is not None:
            recall = self.recall.compute()
            for name, value in zip(self.class_names, recall, strict=True):
                if not bool(value.isnan()):
                    result[f"recall_{name}"] = value
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
        if self.recall is not None:
            self.recall.reset()
        if self.confmat is not None:
            self.confmat.reset()
        if self.calibration is not None:
            self.calibration.reset()
        if self.valence is not None and self.arousal is not None:
            self.valence.reset()
            self.arousal.reset()
