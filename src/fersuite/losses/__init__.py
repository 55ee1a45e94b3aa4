"""Losses: supervised affect loss and distillation losses."""

from fersuite.losses.affect import AffectLoss, ccc, regression_loss
from fersuite.losses.distill import (
    DistillationLoss,
    FeatureHint,
    HintonKDLoss,
    TeacherBoundedLoss,
    kd_kl_loss,
    restricted_teacher_probs,
    teacher_bounded_loss,
)

__all__ = [
    "AffectLoss",
    "DistillationLoss",
    "FeatureHint",
    "HintonKDLoss",
    "TeacherBoundedLoss",
    "ccc",
    "kd_kl_loss",
    "regression_loss",
    "restricted_teacher_probs",
    "teacher_bounded_loss",
]
