"""Distillation losses: Hinton KD, the teacher-bounded regression loss and feature hints.

* :func:`kd_kl_loss` — KL(softmax(t/T) ‖ softmax(s/T))·T² (Hinton et al., 2015). When the
  teacher and student label sets differ, the teacher's probabilities are restricted to the
  classes both know and renormalised (on probabilities, not logits).
* :func:`teacher_bounded_loss` — the teacher-bounded regression loss of Chen et al.
  (NeurIPS 2017): per element the student pays (s − y)² only where
  (s − y)² + m > (t − y)², i.e. where it is not already better than the teacher by the
  margin m; elsewhere the element costs 0 and has no gradient.
* :class:`FeatureHint` — a learned 1×1 convolution mapping the student's feature map to the
  teacher's width, resized to the teacher's spatial size, compared with MSE (FitNets-style
  hint; off by default).
* :class:`DistillationLoss` — :class:`~fersuite.losses.affect.AffectLoss` (cross-entropy +
  valence/arousal regression to the ground truth) plus ``alpha``·KD, ``nu``·teacher-bounded
  VA terms and ``hint_weight``·hint. Without teacher outputs it is exactly the supervised loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fersuite.losses.affect import AffectLoss
from fersuite.types import AffectOutput

__all__ = [
    "DistillationLoss",
    "FeatureHint",
    "HintonKDLoss",
    "TeacherBoundedLoss",
    "kd_kl_loss",
    "restricted_teacher_probs",
    "teacher_bounded_loss",
]


def _check_index(index: torch.Tensor | None, width: int, what: str) -> None:
    if index is None:
        return
    if index.ndim != 1 or index.numel() == 0:
        raise ValueError(f"{what} must be a non-empty 1-D index tensor, got {tuple(index.shape)}")
    if int(index.min()) < 0 or int(index.max()) >= width:
        raise ValueError(f"{what} has entries outside [0, {width}) (the logits' class axis)")


def restricted_teacher_probs(
    teacher_logits: torch.Tensor, temperature: float, teacher_index: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(t/T) over all teacher classes, restricted to ``teacher_index`` and renormalised.

    ``teacher_index[j]`` is the teacher class that corresponds to the j-th compared class
    (see :class:`fersuite.distill.labels.ClassMap`); ``None`` keeps every class in order.
    """
    if temperature <= 0:
        raise ValueError(f"loss.temperature={temperature}; expected > 0")
    probs = F.softmax(teacher_logits.float() / temperature, dim=1)
    if teacher_index is None:
        return probs
    _check_index(teacher_index, probs.shape[1], "teacher_index")
    kept = probs.index_select(1, teacher_index.to(probs.device))
    return kept / kept.sum(dim=1, keepdim=True).clamp_min(torch.finfo(kept.dtype).tiny)


def kd_kl_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 4.0,
    student_index: torch.Tensor | None = None,
    teacher_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """Hinton KD: KL(softmax(t/T) ‖ softmax(s/T))·T², averaged over the batch.

    ``student_index`` / ``teacher_index`` select the classes both models know (same length,
    aligned); the student's distribution is taken over its selected classes and the
    teacher's probabilities are restricted and renormalised. The teacher gets no gradient.
    """
    if student_logits.ndim != 2 or teacher_logits.ndim != 2:
        raise ValueError(
            "kd_kl_loss expects (B, C) logits, got student "
            f"{tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)}"
        )
    if student_logits.shape[0] != teacher_logits.shape[0]:
        raise ValueError(
            f"student and teacher batch sizes differ: {student_logits.shape[0]} vs "
            f"{teacher_logits.shape[0]}"
        )
    target = restricted_teacher_probs(teacher_logits.detach(), temperature, teacher_index)
    s = student_logits
    if student_index is not None:
        _check_index(student_index, s.shape[1], "student_index")
        s = s.index_select(1, student_index.to(s.device))
    if s.shape[1] != target.shape[1]:
        raise ValueError(
            f"the student compares {s.shape[1]} classes but the teacher {target.shape[1]}; "
            "pass aligned student_index/teacher_index (fersuite.distill.labels.ClassMap)"
        )
    if s.shape[0] == 0:
        return s.sum() * 0.0
    log_p_student = F.log_softmax(s.float() / temperature, dim=1)
    kl = F.kl_div(log_p_student, target, reduction="batchmean")
    return kl * temperature**2


def teacher_bounded_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor,
    margin: float = 0.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Teacher-bounded regression loss (Chen et al., NeurIPS 2017), a scalar tensor.

    Per element: (s − y)² if (s − y)² + margin > (t − y)², else 0 (no gradient). The mean is
    taken over the elements ``mask`` keeps (all when ``None``; ``mask`` marks valid targets,
    e.g. not AffectNet's −2); bounded elements count as zeros in that mean. An all-masked
    batch gives 0 (still attached to ``student``'s graph, never NaN).
    """
    if student.shape != target.shape or teacher.shape != target.shape:
        raise ValueError(
            "teacher_bounded_loss needs equal shapes, got student "
            f"{tuple(student.shape)}, teacher {tuple(teacher.shape)}, target {tuple(target.shape)}"
        )
    if mask is not None:
        if mask.shape != target.shape:
            raise ValueError(
                f"mask has shape {tuple(mask.shape)} but the targets {tuple(target.shape)}"
            )
        mask = mask.to(device=student.device, dtype=torch.bool)
        # Select first: invalid targets (NaN, -2) never enter the arithmetic or the gradient.
        student, teacher, target = student[mask], teacher[mask], target[mask]
    if student.numel() == 0:
        return student.sum() * 0.0
    target = target.to(student.dtype)
    student_err = (student - target) ** 2
    teacher_err = (teacher.detach().to(student.dtype) - target) ** 2
    active = (student_err.detach() + margin) > teacher_err
    return torch.where(active, student_err, torch.zeros_like(student_err)).mean()


class TeacherBoundedLoss(nn.Module):
    """Module form of :func:`teacher_bounded_loss` with the margin from config."""

    def __init__(self, margin: float = 0.0) -> None:
        super().__init__()
        if margin < 0:
            raise ValueError(f"loss.margin={margin}; expected >= 0")
        self.margin = float(margin)

    def forward(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return teacher_bounded_loss(student, teacher, target, self.margin, mask)


class HintonKDLoss(nn.Module):
    """Module form of :func:`kd_kl_loss`; the class alignment is set with :meth:`set_class_map`."""

    def __init__(self, temperature: float = 4.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"loss.temperature={temperature}; expected > 0")
        self.temperature = float(temperature)
        self.register_buffer("student_index", None, persistent=False)
        self.register_buffer("teacher_index", None, persistent=False)

    def set_class_map(
        self, student_index: Sequence[int] | None, teacher_index: Sequence[int] | None
    ) -> None:
        if (student_index is None) != (teacher_index is None):
            raise ValueError("set student_index and teacher_index together (or neither)")
        if student_index is not None and teacher_index is not None:
            if len(student_index) != len(teacher_index) or not len(student_index):
                raise ValueError(
                    f"class map needs aligned non-empty indices, got {len(student_index)} "
                    f"student and {len(teacher_index)} teacher entries"
                )
            self.student_index = torch.as_tensor(list(student_index), dtype=torch.long)
            self.teacher_index = torch.as_tensor(list(teacher_index), dtype=torch.long)
        else:
            self.student_index = None
            self.teacher_index = None

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        return kd_kl_loss(
            student_logits,
            teacher_logits,
            self.temperature,
            self.student_index,
            self.teacher_index,
        )


class FeatureHint(nn.Module):
    """Learned 1×1 conv adapter: student feature map -> teacher width, at the teacher's size.

    ``forward(student_feats, teacher_feats)`` returns the MSE between the adapted student map
    (bilinearly resized to the teacher map's spatial size) and the detached teacher map.
    """

    def __init__(self, student_channels: int, teacher_channels: int) -> None:
        super().__init__()
        if student_channels <= 0 or teacher_channels <= 0:
            raise ValueError(
                f"FeatureHint needs positive widths, got {student_channels} -> {teacher_channels}"
            )
        self.adapter = nn.Conv2d(student_channels, teacher_channels, kernel_size=1)

    def forward(self, student_feats: torch.Tensor, teacher_feats: torch.Tensor) -> torch.Tensor:
        if student_feats.ndim != 4 or teacher_feats.ndim != 4:
            raise ValueError(
                "feature hints need (B, C, H, W) feature maps, got student "
                f"{tuple(student_feats.shape)} and teacher {tuple(teacher_feats.shape)}"
            )
        adapted = self.adapter(student_feats)
        size = tuple(teacher_feats.shape[-2:])
        if tuple(adapted.shape[-2:]) != size:
            adapted = F.interpolate(adapted, size=size, mode="bilinear", align_corners=False)
        return F.mse_loss(adapted.float(), teacher_feats.detach().float())


class DistillationLoss(AffectLoss):
    """Supervised affect loss + Hinton KD + teacher-bounded valence/arousal regression.

    total = expression_weight·CE(s, y) + alpha·KD(s, t; T)
            + valence_weight·R(s_v, y_v) + arousal_weight·R(s_a, y_a)
            + nu·(TB(s_v, t_v, y_v; m) + TB(s_a, t_a, y_a; m)) + hint_weight·hint

    where R is the ground-truth regression loss (``va_loss``: mse, l1 or ccc) and TB the
    teacher-bounded loss. The classic convex Hinton mix is ``expression_weight = 1 − alpha``.
    The VA terms follow :class:`AffectLoss` (skipped without VA labels or when both VA
    weights are 0; invalid VA masked out). Called without a teacher it returns exactly the
    supervised terms (validation, test, or ``task=supervised``).
    """

    def __init__(
        self,
        alpha: float = 0.5,
        temperature: float = 4.0,
        nu: float = 0.5,
        margin: float = 0.0,
        hint_weight: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        for key, value in (("alpha", alpha), ("nu", nu), ("hint_weight", hint_weight)):
            if value < 0:
                raise ValueError(f"loss.{key}={value}; weights must be >= 0")
        self.alpha = float(alpha)
        self.nu = float(nu)
        self.hint_weight = float(hint_weight)
        self.kd = HintonKDLoss(temperature)
        self.bounded = TeacherBoundedLoss(margin)

    @property
    def temperature(self) -> float:
        return self.kd.temperature

    @property
    def margin(self) -> float:
        return self.bounded.margin

    def set_class_map(
        self, student_index: Sequence[int] | None, teacher_index: Sequence[int] | None
    ) -> None:
        """Align the student's and teacher's classes (see ``fersuite.distill.labels``)."""
        self.kd.set_class_map(student_index, teacher_index)

    def forward(  # type: ignore[override]
        self,
        out: AffectOutput,
        batch: dict[str, torch.Tensor],
        teacher: AffectOutput | None = None,
        hint: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Loss terms (``loss`` is the weighted total).

        The teacher's predictions come from ``teacher`` or, when it is None, from the batch
        (``teacher_expression`` logits, optionally ``teacher_valence``/``teacher_arousal``;
        without them the teacher-bounded terms are skipped, e.g. for a teacher never trained
        on valence/arousal). ``hint`` (or ``batch["hint_loss"]``) is a feature-hint value.
        """
        terms = super().forward(out, batch)
        if teacher is None and "teacher_expression" in batch:
            t_v, t_a = batch.get("teacher_valence"), batch.get("teacher_arousal")
            teacher_logits = batch["teacher_expression"]
        elif teacher is not None:
            teacher_logits, t_v, t_a = teacher.expression, teacher.valence, teacher.arousal
        else:
            return terms
        if hint is None:
            hint = batch.get("hint_loss")
        total = terms["loss"]
        kd = self.kd(out.expression, teacher_logits)
        terms["loss_kd"] = kd
        total = total + self.alpha * kd
        va_ready = t_v is not None and t_a is not None and "valence" in batch
        if va_ready and self.nu > 0 and self.uses_va:
            assert t_v is not None and t_a is not None
            mask = batch.get("va_mask")
            tb_v = self.bounded(out.valence, t_v, batch["valence"], mask)
            tb_a = self.bounded(out.arousal, t_a, batch["arousal"], mask)
            terms["loss_tb_valence"] = tb_v
            terms["loss_tb_arousal"] = tb_a
            total = total + self.nu * (tb_v + tb_a)
        if hint is not None:
            terms["loss_hint"] = hint
            total = total + self.hint_weight * hint
        terms["loss"] = total
        return terms
