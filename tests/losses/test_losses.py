"""The supervised affect loss: terms, masks, weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fersuite.losses import AffectLoss, ccc
from fersuite.types import AffectOutput


def _out(n: int = 6, c: int = 4, seed: int = 0) -> AffectOutput:
    g = torch.Generator().manual_seed(seed)
    return AffectOutput(
        torch.randn(n, c, generator=g, requires_grad=True),
        torch.rand(n, generator=g).mul(2).sub(1).requires_grad_(),
        torch.rand(n, generator=g).mul(2).sub(1).requires_grad_(),
    )


def test_ccc_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=50), rng.normal(size=50) + 0.5
    ref = 2 * np.cov(x, y, bias=True)[0, 1] / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)
    assert ccc(torch.tensor(x), torch.tensor(y)).item() == pytest.approx(ref, rel=1e-6)


def test_total_is_weighted_sum_and_mask_applies() -> None:
    out = _out()
    target = torch.tensor([0, 1, 2, 3, 0, 1])
    val = torch.linspace(-1, 1, 6)
    aro = torch.linspace(1, -1, 6)
    mask = torch.tensor([True, True, False, True, False, True])
    loss = AffectLoss(valence_weight=0.5, arousal_weight=2.0)
    terms = loss(out, {"expression": target, "valence": val, "arousal": aro, "va_mask": mask})
    ce = F.cross_entropy(out.expression, target)
    v = F.mse_loss(out.valence[mask], val[mask])
    a = F.mse_loss(out.arousal[mask], aro[mask])
    assert terms["loss_valence"].item() == pytest.approx(v.item())
    assert terms["loss"].item() == pytest.approx((ce + 0.5 * v + 2.0 * a).item(), rel=1e-6)
    terms["loss"].backward()
    assert out.valence.grad is not None
    assert torch.all(out.valence.grad[~mask] == 0)


def test_va_terms_off_without_labels_or_weights() -> None:
    out = _out()
    batch = {"expression": torch.zeros(6, dtype=torch.long)}
    assert set(AffectLoss()(out, batch)) == {"loss_ce", "loss"}
    batch_va = {**batch, "valence": torch.zeros(6), "arousal": torch.zeros(6)}
    assert "loss_valence" not in AffectLoss(valence_weight=0, arousal_weight=0)(out, batch_va)


def test_all_masked_batch_gives_finite_zero_va() -> None:
    out = _out()
    batch = {
        "expression": torch.zeros(6, dtype=torch.long),
        "valence": torch.full((6,), -2.0),
        "arousal": torch.full((6,), -2.0),
        "va_mask": torch.zeros(6, dtype=torch.bool),
    }
    for kind in ("mse", "l1", "ccc"):
        terms = AffectLoss(va_loss=kind)(out, batch)
        assert terms["loss_valence"].item() == 0.0
        assert torch.isfinite(terms["loss"])


def test_class_weights_and_label_smoothing() -> None:
    out = _out()
    target = torch.tensor([0, 1, 2, 3, 0, 1])
    w = torch.tensor([1.0, 2.0, 0.5, 1.0])
    terms = AffectLoss(
        class_weights=w.tolist(), label_smoothing=0.1, valence_weight=0, arousal_weight=0
    )(out, {"expression": target})
    ref = F.cross_entropy(out.expression, target, weight=w, label_smoothing=0.1)
    assert terms["loss"].item() == pytest.approx(ref.item(), rel=1e-6)
    with pytest.raises(ValueError, match="class_weights has 3"):
        AffectLoss(class_weights=[1.0, 1.0, 1.0])(out, {"expression": target})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"va_loss": "huber"}, "va_loss"),
        ({"label_smoothing": 1.5}, "label_smoothing"),
        ({"valence_weight": -1}, "valence_weight"),
    ],
)
def test_bad_loss_config(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AffectLoss(**kwargs)  # type: ignore[arg-type]


def test_build_loss_takes_auto_class_weights_from_the_training_split() -> None:
    from omegaconf import OmegaConf

    from fersuite.modules.affect_module import build_loss

    class FakeData:
        def __init__(self) -> None:
            self.stages: list[str] = []

        def setup(self, stage: str) -> None:
            self.stages.append(stage)

        def class_weights(self) -> torch.Tensor:
            return torch.tensor([0.5, 2.0, 1.0])

    cfg = OmegaConf.create(
        {"loss": {"_target_": "fersuite.losses.affect.AffectLoss", "class_weights": "auto"}}
    )
    data = FakeData()
    loss = build_loss(cfg, data)
    assert data.stages == ["fit"]
    assert torch.equal(loss.class_weights, torch.tensor([0.5, 2.0, 1.0]))

    def refuse(loss: object, loss_cfg: dict) -> None:
        raise ValueError(f"refused {loss_cfg['_target_']}")

    data = FakeData()
    with pytest.raises(ValueError, match=r"refused fersuite\.losses\.affect\.AffectLoss"):
        build_loss(cfg, data, check=refuse)
    assert data.stages == []  # refused before the data is set up
