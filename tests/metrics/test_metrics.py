"""Metrics against numpy/scipy references on random data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from fersuite.metrics import AffectMetrics, SignAgreement
from fersuite.types import AffectOutput


def np_ccc(x: np.ndarray, y: np.ndarray) -> float:
    mx, my = x.mean(), y.mean()
    cov = ((x - mx) * (y - my)).mean()
    return float(2 * cov / (x.var() + y.var() + (mx - my) ** 2))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sagr_matches_numpy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = rng.uniform(-1, 1, 257).astype(np.float32)
    t = rng.uniform(-1, 1, 257).astype(np.float32)
    t[:5] = 0.0
    m = SignAgreement()
    for chunk in np.array_split(np.arange(257), 4):
        m.update(torch.from_numpy(p[chunk]), torch.from_numpy(t[chunk]))
    assert m.compute().item() == pytest.approx(float(np.mean(np.sign(p) == np.sign(t))))


def test_sagr_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="equal shapes"):
        SignAgreement().update(torch.zeros(3), torch.zeros(4))


@pytest.mark.parametrize("seed", [0, 3])
def test_affect_metrics_match_references(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, c = 300, 8
    logits = rng.normal(size=(n, c)).astype(np.float32)
    labels = rng.integers(0, c, n)
    labels[: n // 3] = logits[: n // 3].argmax(1)  # better than chance
    v_true = rng.uniform(-1, 1, n).astype(np.float32)
    a_true = rng.uniform(-1, 1, n).astype(np.float32)
    v_pred = np.clip(v_true + rng.normal(0, 0.3, n), -1, 1).astype(np.float32)
    a_pred = np.clip(0.5 * a_true + rng.normal(0, 0.3, n), -1, 1).astype(np.float32)
    mask = rng.random(n) > 0.2

    metrics = AffectMetrics(c, has_va=True)
    for idx in np.array_split(np.arange(n), 5):
        out = AffectOutput(
            torch.from_numpy(logits[idx]),
            torch.from_numpy(v_pred[idx]),
            torch.from_numpy(a_pred[idx]),
        )
        batch = {
            "expression": torch.from_numpy(labels[idx]),
            "valence": torch.from_numpy(v_true[idx]),
            "arousal": torch.from_numpy(a_true[idx]),
            "va_mask": torch.from_numpy(mask[idx]),
        }
        metrics.update(out, batch)
    res = {k: float(v) for k, v in metrics.compute().items()}

    pred = logits.argmax(1)
    assert res["acc"] == pytest.approx(float((pred == labels).mean()), abs=1e-6)
    recalls, f1s = [], []
    for k in range(c):
        tp = np.sum((pred == k) & (labels == k))
        fp = np.sum((pred == k) & (labels != k))
        fn = np.sum((pred != k) & (labels == k))
        recalls.append(tp / (tp + fn) if tp + fn else 0.0)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    assert res["balanced_acc"] == pytest.approx(float(np.mean(recalls)), abs=1e-5)
    assert res["f1_macro"] == pytest.approx(float(np.mean(f1s)), abs=1e-5)

    for name, p, t in (("valence", v_pred, v_true), ("arousal", a_pred, a_true)):
        pm, tm = p[mask], t[mask]
        assert res[f"{name}_rmse"] == pytest.approx(
            float(np.sqrt(np.mean((pm - tm) ** 2))), abs=1e-5
        )
        assert res[f"{name}_ccc"] == pytest.approx(np_ccc(pm, tm), abs=1e-4)
        assert res[f"{name}_pcc"] == pytest.approx(float(stats.pearsonr(pm, tm)[0]), abs=1e-4)
        assert res[f"{name}_sagr"] == pytest.approx(
            float(np.mean(np.sign(pm) == np.sign(tm))), abs=1e-6
        )

    cm = metrics.confusion()
    assert cm is not None
    ref = np.zeros((c, c), dtype=np.int64)
    np.add.at(ref, (labels, pred), 1)
    np.testing.assert_array_equal(cm.numpy(), ref)


def test_affect_metrics_without_va_and_soft_targets() -> None:
    metrics = AffectMetrics(3, has_va=False)
    logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0]])
    soft = torch.tensor([[0.8, 0.2, 0.0], [0.1, 0.1, 0.8], [0.0, 0.0, 1.0]])
    metrics.update(AffectOutput(logits, torch.zeros(3), torch.zeros(3)), {"expression": soft})
    res = metrics.compute()
    assert "valence_ccc" not in res
    assert res["acc"].item() == pytest.approx(2 / 3)
