"""Masked cross-entropy (``data=multi``): a class a sample's dataset lacks is no negative."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fersuite.losses.affect import AffectLoss, masked_cross_entropy
from fersuite.types import AffectOutput


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True])
def test_every_class_allowed_is_plain_cross_entropy(smoothing: float, weighted: bool) -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=g)
    target = torch.randint(0, 5, (6,), generator=g)
    weight = torch.rand(5, generator=g) + 0.5 if weighted else None
    mask = torch.ones(6, 5, dtype=torch.bool)
    got = masked_cross_entropy(logits, target, mask, weight, smoothing)
    want = F.cross_entropy(logits, target, weight=weight, label_smoothing=smoothing)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    soft = torch.softmax(torch.randn(6, 5, generator=g), 1)
    got = masked_cross_entropy(logits, soft, mask, weight, smoothing)
    want = F.cross_entropy(logits, soft, weight=weight, label_smoothing=smoothing)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_masked_classes_are_ignored_by_hand() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, 5.0], [0.5, 0.5, 3.0, -1.0]], requires_grad=True)
    target = torch.tensor([1, 2])
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    loss = masked_cross_entropy(logits, target, mask)
    # sample 0 over classes 0..2 only; sample 1 over all four
    l0 = -(1.0 - math.log(math.exp(2) + math.exp(1) + math.exp(0)))
    l1 = -(3.0 - math.log(2 * math.exp(0.5) + math.exp(3) + math.exp(-1)))
    assert loss.item() == pytest.approx((l0 + l1) / 2, rel=1e-6)
    loss.backward()
    assert logits.grad is not None and logits.grad[0, 3].item() == 0.0  # no push on class 3
    assert logits.grad[1, 3].item() > 0.0
    # the masked logit's value does not matter
    other = logits.detach().clone()
    other[0, 3] = -7.0
    assert masked_cross_entropy(other, target, mask).item() == pytest.approx(loss.item())


def test_affect_loss_uses_the_mask_only_when_the_batch_has_one() -> None:
    g = torch.Generator().manual_seed(1)
    out = AffectOutput(torch.randn(4, 3, generator=g), torch.zeros(4), torch.zeros(4))
    batch = {"expression": torch.tensor([0, 1, 2, 0])}
    loss = AffectLoss(va_loss="mse")
    plain = loss(out, batch)["loss_ce"]
    assert torch.equal(plain, F.cross_entropy(out.expression, batch["expression"]))
    mask = torch.tensor([[True, True, False]] * 2 + [[True, True, True]] * 2)
    masked = loss(out, {**batch, "class_mask": mask})["loss_ce"]
    assert masked.item() == pytest.approx(
        masked_cross_entropy(out.expression, batch["expression"], mask).item()
    )
    assert masked.item() != pytest.approx(plain.item())
