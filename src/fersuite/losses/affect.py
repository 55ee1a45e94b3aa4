"""Supervised loss for joint expression / valence / arousal prediction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from fersuite.types import AffectOutput

VALossName = Literal["mse", "l1", "ccc"]


def ccc(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Concordance correlation coefficient of two 1-D tensors (differentiable)."""
    pm, tm = pred.mean(), target.mean()
    pv = pred.var(unbiased=False)
    tv = target.var(unbiased=False)
    cov = ((pred - pm) * (target - tm)).mean()
    return 2 * cov / (pv + tv + (pm - tm) ** 2 + eps)


def regression_loss(pred: torch.Tensor, target: torch.Tensor, kind: VALossName) -> torch.Tensor:
    """MSE, L1 or 1 - CCC between ``pred`` and ``target`` (already masked, 1-D)."""
    if pred.numel() == 0:
        return pred.sum() * 0.0
    if kind == "mse":
        return F.mse_loss(pred, target)
    if kind == "l1":
        return F.l1_loss(pred, target)
    if kind == "ccc":
        if pred.numel() < 2:
            return F.mse_loss(pred, target)
        return 1.0 - ccc(pred, target)
    raise ValueError(f"loss.va_loss={kind!r}; expected one of mse, l1, ccc")


def masked_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    class_mask: torch.Tensor,
    weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Cross-entropy over each sample's allowed classes only (``class_mask`` (N, K) bool):
    the logits of the other classes are -inf before the softmax, so a class a sample's
    dataset lacks is never a negative for it. With every class allowed it is
    ``F.cross_entropy`` (same class ``weight`` and ``label_smoothing``, the smoothing spread
    over the allowed classes); ``target``: (N,) indices or (N, K) probabilities."""
    mask = class_mask.to(device=logits.device, dtype=torch.bool)
    logp = logits.float().masked_fill(~mask, float("-inf")).log_softmax(dim=1)
    logp = logp.masked_fill(~mask, 0.0)  # no -inf * 0 below
    w = torch.ones(logits.shape[1], device=logits.device) if weight is None else weight.float()
    if target.ndim == 2:  # probabilities: smoothing mixes in the uniform over allowed classes
        t = target.float() * mask
        if label_smoothing > 0:
            t = (1 - label_smoothing) * t + label_smoothing * mask / mask.sum(1, keepdim=True)
        return -(t * w * logp).sum(1).mean().to(logits.dtype)
    nll = -logp.gather(1, target.long()[:, None]).squeeze(1) * w[target]
    per = (1 - label_smoothing) * nll
    if label_smoothing > 0:
        per = per - label_smoothing * (logp * w).sum(1) / mask.sum(1)
    return (per.sum() / w[target].sum()).to(logits.dtype)


class AffectLoss(nn.Module):
    """Cross-entropy on expressions + weighted valence/arousal regression.

    The VA terms are skipped when the batch has no VA labels or ``va_weight`` is 0; samples
    whose VA is invalid (``va_mask`` False, e.g. AffectNet's -2) are masked out. A batch with
    ``class_mask`` (``data=multi``) takes :func:`masked_cross_entropy`.
    Returns a dict of terms with the weighted total under ``"loss"``.
    """

    def __init__(
        self,
        expression_weight: float = 1.0,
        label_smoothing: float = 0.0,
        class_weights: Sequence[float] | None = None,
        va_loss: VALossName = "mse",
        valence_weight: float = 1.0,
        arousal_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if va_loss not in ("mse", "l1", "ccc"):
            raise ValueError(f"loss.va_loss={va_loss!r}; expected one of mse, l1, ccc")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"loss.label_smoothing={label_smoothing}; expected a value in [0, 1)")
        for key, w in (
            ("expression_weight", expression_weight),
            ("valence_weight", valence_weight),
            ("arousal_weight", arousal_weight),
        ):
            if w < 0:
                raise ValueError(f"loss.{key}={w}; weights must be >= 0")
        self.expression_weight = expression_weight
        self.label_smoothing = label_smoothing
        self.va_loss = va_loss
        self.valence_weight = valence_weight
        self.arousal_weight = arousal_weight
        cw = (
            torch.as_tensor(class_weights, dtype=torch.float32)
            if class_weights is not None
            else None
        )
        self.register_buffer("class_weights", cw, persistent=False)

    @property
    def uses_va(self) -> bool:
        return self.valence_weight > 0 or self.arousal_weight > 0

    @property
    def trains_va(self) -> bool:
        """The loss trains the valence/arousal heads (given VA labels): a model trained with
        it "has VA" (its VA metrics mean something, it may teach VA). ``loss=ce`` does not;
        ``ce_va``, ``ccc`` and ``kd`` do (their teacher-bounded VA terms need it too)."""
        return self.uses_va

    def set_class_weights(self, weights: torch.Tensor | None) -> None:
        self.class_weights = None if weights is None else weights.float()

    def forward(self, out: AffectOutput, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        target = batch["expression"]
        weight = self.class_weights
        if weight is not None and weight.numel() != out.expression.shape[1]:
            raise ValueError(
                f"loss.class_weights has {weight.numel()} entries but the model predicts "
                f"{out.expression.shape[1]} classes"
            )
        if "class_mask" in batch:  # data=multi: classes a sample's source lacks are ignored
            ce = masked_cross_entropy(
                out.expression, target, batch["class_mask"], weight, self.label_smoothing
            )
        else:
            ce = F.cross_entropy(
                out.expression, target, weight=weight, label_smoothing=self.label_smoothing
            )
        terms = {"loss_ce": ce}
        total = self.expression_weight * ce
        if self.uses_va and "valence" in batch:
            mask = batch.get("va_mask")
            if mask is None:
                mask = torch.ones_like(batch["valence"], dtype=torch.bool)
            v = regression_loss(out.valence[mask], batch["valence"][mask], self.va_loss)
            a = regression_loss(out.arousal[mask], batch["arousal"][mask], self.va_loss)
            terms["loss_valence"] = v
            terms["loss_arousal"] = a
            total = total + self.valence_weight * v + self.arousal_weight * a
        terms["loss"] = total
        return terms
