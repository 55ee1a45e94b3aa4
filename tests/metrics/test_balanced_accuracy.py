"""Balanced accuracy and per-class recall against sklearn (the reference)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from fersuite.metrics.affect import AffectMetrics, BalancedAccuracy, ClassRecall
from fersuite.types import AffectOutput

NAMES = ("anger", "disgust", "fear", "happy", "sad", "surprise")


def _run(logits: np.ndarray, labels: np.ndarray, chunks: int = 4) -> dict[str, float]:
    metrics = AffectMetrics(len(NAMES), has_va=False, class_names=NAMES)
    n = len(labels)
    for idx in np.array_split(np.arange(n), chunks):
        out = AffectOutput(
            torch.from_numpy(logits[idx]), torch.zeros(len(idx)), torch.zeros(len(idx))
        )
        metrics.update(out, {"expression": torch.from_numpy(labels[idx])})
    return {k: float(v) for k, v in metrics.compute().items()}


def _sk_balanced(labels: np.ndarray, pred: np.ndarray) -> float:
    from sklearn import metrics as sklearn_metrics

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true"
        return float(sklearn_metrics.balanced_accuracy_score(labels, pred))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_balanced_accuracy_and_recall_match_sklearn(seed: int) -> None:
    sklearn_metrics = pytest.importorskip("sklearn.metrics")  # the by-hand test below needs none
    rng = np.random.default_rng(seed)
    n, c = 211, len(NAMES)
    # Imbalanced targets; class 5 is absent from the targets but predicted now and then.
    labels = rng.choice(c - 1, size=n, p=[0.5, 0.05, 0.15, 0.2, 0.1])
    logits = rng.normal(size=(n, c)).astype(np.float32)
    logits[np.arange(n), labels] += rng.uniform(0, 2.5, n).astype(np.float32)
    pred = logits.argmax(1)
    assert (pred == c - 1).any() and not (labels == c - 1).any()

    res = _run(logits, labels)
    assert res["balanced_acc"] == pytest.approx(_sk_balanced(labels, pred), abs=1e-6)
    present = sorted(set(labels.tolist()))
    recall = sklearn_metrics.recall_score(labels, pred, labels=present, average=None)
    for k, r in zip(present, recall, strict=True):
        assert res[f"recall_{NAMES[k]}"] == pytest.approx(float(r), abs=1e-6)
    # the absent class has no recall key, and the plain accuracy is the micro one
    assert f"recall_{NAMES[c - 1]}" not in res
    assert res["acc"] == pytest.approx(float((pred == labels).mean()), abs=1e-6)


def test_balanced_accuracy_by_hand_on_a_small_confusion() -> None:
    # targets: 4 x class 0, 2 x class 1, 0 x class 2; class 2 predicted once.
    target = torch.tensor([0, 0, 0, 0, 1, 1])
    pred = torch.tensor([0, 0, 1, 2, 1, 0])
    ba = BalancedAccuracy(3)
    ba.update(pred, target)
    # recall(0) = 2/4, recall(1) = 1/2; class 2 left out (torchmetrics' macro would give 1/3)
    assert float(ba.compute()) == pytest.approx(0.5)
    per_class = ClassRecall(3)
    per_class.update(pred, target)
    got = per_class.compute()
    assert got[:2].tolist() == pytest.approx([0.5, 0.5]) and bool(got[2].isnan())


def test_no_class_names_no_recall_keys() -> None:
    metrics = AffectMetrics(3, has_va=False)
    logits = torch.eye(3)
    metrics.update(
        AffectOutput(logits, torch.zeros(3), torch.zeros(3)), {"expression": torch.arange(3)}
    )
    res = metrics.compute()
    assert not any(k.startswith("recall_") for k in res)
    assert float(res["balanced_acc"]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        AffectMetrics(3, has_va=False, class_names=("a", "b"))
