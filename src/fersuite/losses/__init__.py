"""Losses: supervised affect loss (and distillation losses)."""

from fersuite.losses.affect import AffectLoss, ccc, regression_loss

__all__ = ["AffectLoss", "ccc", "regression_loss"]
