"""Metrics: classification, valence/arousal regression and SAGR."""

from fersuite.metrics.affect import AffectMetrics
from fersuite.metrics.sagr import SignAgreement

__all__ = ["AffectMetrics", "SignAgreement"]
