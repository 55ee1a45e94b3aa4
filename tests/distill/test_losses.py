"""Distillation losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fersuite.distill.labels import ClassMap
from fersuite.labels import CANONICAL_CLASSES, canonical_name
from fersuite.losses import (
    AffectLoss,
    DistillationLoss,
    FeatureHint,
    TeacherBoundedLoss,
    kd_kl_loss,
    restricted_teacher_probs,
    teacher_bounded_loss,
)
from fersuite.types import AffectOutput

FER2013 = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


# ------------------------------------------------------------------ teacher-bounded loss
def test_bounded_and_unbounded_elements_by_hand() -> None:
    s = torch.tensor([0.5, 0.0, -0.2, 1.0])
    t = torch.tensor([0.1, 0.5, -0.2, 0.0])
    y = torch.zeros(4)
    # student errors 0.25, 0, 0.04, 1; teacher errors 0.01, 0.25, 0.04, 0
    # paid: 0.25 (worse), 0 (better), 0 (tie is not ">"), 1 (worse) -> mean over 4
    assert teacher_bounded_loss(s, t, y).item() == pytest.approx(1.25 / 4)
    # a margin of 0.3 makes every element pay: (0.25 + 0 + 0.04 + 1) / 4
    assert teacher_bounded_loss(s, t, y, margin=0.3).item() == pytest.approx(1.29 / 4)


def test_margin_edge_is_exclusive() -> None:
    s, t, y = torch.tensor([0.5]), torch.tensor([1.0]), torch.tensor([0.0])
    # (s - y)^2 + m == (t - y)^2 exactly (0.25 + 0.75 == 1.0 in binary floats): bounded
    assert teacher_bounded_loss(s, t, y, margin=0.75).item() == 0.0
    assert teacher_bounded_loss(s, t, y, margin=0.75 + 2**-10).item() == pytest.approx(0.25)


def test_mask_keeps_valid_targets_and_ignores_invalid_values() -> None:
    s = torch.tensor([0.5, 0.3, -0.2, 0.9], requires_grad=True)
    t = torch.tensor([0.1, 0.0, -0.2, 0.0])
    y = torch.tensor([0.0, math.nan, 0.0, -2.0])  # NaN / AffectNet's -2 where invalid
    mask = torch.tensor([True, False, True, False])
    loss = teacher_bounded_loss(s, t, y, mask=mask)
    assert loss.item() == pytest.approx((0.25 + 0.0) / 2)
    loss.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()
    assert s.grad.tolist() == pytest.approx([2 * 0.5 / 2, 0.0, 0.0, 0.0])


def test_all_masked_batch_is_zero_without_nan() -> None:
    s = torch.tensor([0.5, -0.5], requires_grad=True)
    y = torch.tensor([-2.0, -2.0])
    loss = teacher_bounded_loss(s, torch.zeros(2), y, mask=torch.zeros(2, dtype=torch.bool))
    assert loss.item() == 0.0 and not torch.isnan(loss)
    loss.backward()
    assert s.grad is not None and s.grad.abs().sum().item() == 0.0
    empty = teacher_bounded_loss(torch.zeros(0), torch.zeros(0), torch.zeros(0))
    assert empty.item() == 0.0


def test_gradient_is_zero_where_bounded() -> None:
    s = torch.tensor([0.5, 0.1, -0.4], requires_grad=True)
    t = torch.tensor([0.0, 0.6, 0.0], requires_grad=True)
    y = torch.zeros(3)
    teacher_bounded_loss(s, t, y).backward()
    assert s.grad is not None
    # element 1 is better than the teacher: no gradient; others 2 (s - y) / N
    assert s.grad.tolist() == pytest.approx([2 * 0.5 / 3, 0.0, 2 * -0.4 / 3])
    assert t.grad is None or t.grad.abs().sum().item() == 0.0


def test_module_form_and_bad_input() -> None:
    s, t, y = torch.tensor([0.5]), torch.tensor([1.0]), torch.tensor([0.0])
    assert TeacherBoundedLoss(margin=0.75)(s, t, y).item() == 0.0
    with pytest.raises(ValueError, match="margin"):
        TeacherBoundedLoss(margin=-1)
    with pytest.raises(ValueError, match="equal shapes"):
        teacher_bounded_loss(torch.zeros(2), torch.zeros(3), torch.zeros(2))


# ------------------------------------------------------------------------- Hinton KD
def _manual_kl(s: torch.Tensor, p_t: torch.Tensor, temp: float) -> float:
    s64, p64 = s.double(), p_t.double()
    log_q = s64 / temp - torch.logsumexp(s64 / temp, dim=1, keepdim=True)
    kl = (p64 * (p64.log() - log_q)).sum(dim=1).mean()
    return float(kl * temp**2)


def test_kd_matches_a_manual_computation() -> None:
    g = torch.Generator().manual_seed(0)
    s = torch.randn(5, 8, generator=g) * 3
    t = torch.randn(5, 8, generator=g) * 3
    p_t = torch.exp(t.double() / 3.0) / torch.exp(t.double() / 3.0).sum(1, keepdim=True)
    assert kd_kl_loss(s, t, temperature=3.0).item() == pytest.approx(_manual_kl(s, p_t, 3.0))
    assert kd_kl_loss(t, t, temperature=3.0).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_gradient_reaches_the_student_only() -> None:
    s = torch.randn(4, 8, requires_grad=True)
    t = torch.randn(4, 8, requires_grad=True)
    kd_kl_loss(s, t, 2.0).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_label_mapping_restricts_and_renormalises_probabilities() -> None:
    cmap = ClassMap.build(FER2013, CANONICAL_CLASSES)
    # FER2013 order mapped onto AffectNet's: anger, disgust, fear, happy, sad, surprise, neutral
    assert cmap.teacher_index == (6, 5, 4, 1, 2, 3, 0)
    assert cmap.student_index == tuple(range(7))
    assert cmap.dropped_teacher == ["contempt"]
    g = torch.Generator().manual_seed(1)
    t = torch.randn(3, 8, generator=g)
    temp = 2.0
    full = torch.softmax(t / temp, dim=1)
    expected = full[:, list(cmap.teacher_index)]
    expected = expected / expected.sum(1, keepdim=True)
    s_idx, t_idx = cmap.indices()
    assert s_idx is not None and t_idx is not None
    got = restricted_teacher_probs(t, temp, torch.tensor(t_idx))
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(got.sum(1), torch.ones(3))
    # renormalised probabilities, not a softmax of the restricted logits at another scale
    s = torch.randn(3, 7, generator=g)
    kd = kd_kl_loss(s, t, temp, torch.tensor(s_idx), torch.tensor(t_idx))
    assert kd.item() == pytest.approx(_manual_kl(s, expected, temp), rel=1e-5)


def test_student_classes_the_teacher_lacks_get_no_kd_signal() -> None:
    cmap = ClassMap.build(CANONICAL_CLASSES, FER2013)
    assert cmap.unmatched_student == ["contempt"]
    assert 7 not in cmap.student_index and len(cmap.student_index) == 7
    s = torch.randn(2, 8, requires_grad=True)
    t = torch.randn(2, 7)
    s_idx, t_idx = cmap.indices()
    kd_kl_loss(s, t, 4.0, torch.tensor(s_idx), torch.tensor(t_idx)).backward()
    assert s.grad is not None and s.grad[:, 7].abs().sum().item() == 0.0
    # evaluating the teacher in the student's classes: contempt is never predicted
    scores = cmap.teacher_logits_for_student(torch.randn(16, 7))
    assert scores.shape == (16, 8) and (scores.argmax(1) != 7).all()
    # the teacher's own prediction, by name, is its prediction in the student's classes
    teacher_pred = [canonical_name(FER2013[i]) for i in t.argmax(1).tolist()]
    mapped = cmap.teacher_logits_for_student(t).argmax(1).tolist()
    assert [CANONICAL_CLASSES[i] for i in mapped] == teacher_pred


def test_class_maps_with_nothing_in_common_fail() -> None:
    with pytest.raises(ValueError, match="share no class"):
        ClassMap.build(["happy", "sad"], ["anger", "fear"])
    with pytest.raises(ValueError, match="unknown expression class"):
        ClassMap.build(["happy", "grumpy"], CANONICAL_CLASSES)


# --------------------------------------------------------------------- combined loss
def _batch(n: int = 6, with_mask: bool = True) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    batch = {
        "expression": torch.randint(0, 8, (n,), generator=g),
        "valence": torch.rand(n, generator=g) * 2 - 1,
        "arousal": torch.rand(n, generator=g) * 2 - 1,
    }
    if with_mask:
        batch["va_mask"] = torch.tensor([True, True, False, True, True, True])[:n]
    return batch


def _out(seed: int, n: int = 6, c: int = 8) -> AffectOutput:
    g = torch.Generator().manual_seed(seed)
    return AffectOutput(
        torch.randn(n, c, generator=g),
        torch.rand(n, generator=g) * 2 - 1,
        torch.rand(n, generator=g) * 2 - 1,
    )


def test_distillation_loss_is_the_weighted_sum_of_its_terms() -> None:
    batch, s, t = _batch(), _out(1), _out(2)
    loss = DistillationLoss(alpha=0.7, temperature=3.0, nu=0.4, margin=0.01)
    terms = loss(s, batch, teacher=t)
    mask = batch["va_mask"]
    expected_kd = kd_kl_loss(s.expression, t.expression, 3.0)
    tb_v = teacher_bounded_loss(s.valence, t.valence, batch["valence"], 0.01, mask)
    tb_a = teacher_bounded_loss(s.arousal, t.arousal, batch["arousal"], 0.01, mask)
    assert terms["loss_kd"].item() == pytest.approx(expected_kd.item())
    assert terms["loss_tb_valence"].item() == pytest.approx(tb_v.item())
    assert terms["loss_tb_arousal"].item() == pytest.approx(tb_a.item())
    total = (
        F.cross_entropy(s.expression, batch["expression"])
        + terms["loss_valence"]
        + terms["loss_arousal"]
        + 0.7 * expected_kd
        + 0.4 * (tb_v + tb_a)
    )
    assert terms["loss"].item() == pytest.approx(total.item(), rel=1e-6)


def test_without_teacher_it_is_the_supervised_loss() -> None:
    batch, s = _batch(), _out(1)
    sup = AffectLoss(va_loss="ccc")(s, batch)
    kd = DistillationLoss(va_loss="ccc")(s, batch)
    assert set(kd) == set(sup)
    for k in sup:
        assert kd[k].item() == pytest.approx(sup[k].item())


def test_teacher_outputs_can_ride_in_the_batch() -> None:
    batch, s, t = _batch(), _out(1), _out(2)
    loss = DistillationLoss(alpha=0.3, nu=0.6)
    explicit = loss(s, batch, teacher=t)
    carried = loss(
        s,
        {
            **batch,
            "teacher_expression": t.expression,
            "teacher_valence": t.valence,
            "teacher_arousal": t.arousal,
        },
    )
    assert set(carried) == set(explicit)
    for k in explicit:
        assert carried[k].item() == pytest.approx(explicit[k].item())
    # a teacher without valence/arousal (only logits in the batch): no bounded terms
    no_va = loss(s, {**batch, "teacher_expression": t.expression})
    assert "loss_kd" in no_va and "loss_tb_valence" not in no_va


def test_bad_weights_fail_with_their_key() -> None:
    with pytest.raises(ValueError, match=r"loss\.alpha"):
        DistillationLoss(alpha=-0.1)
    with pytest.raises(ValueError, match=r"loss\.temperature"):
        DistillationLoss(temperature=0)


def test_feature_hint_resizes_and_trains_only_the_adapter_side() -> None:
    hint = FeatureHint(4, 6)
    student = torch.randn(2, 4, 3, 3, requires_grad=True)
    teacher = torch.randn(2, 6, 5, 5, requires_grad=True)
    loss = hint(student, teacher)
    loss.backward()
    assert loss.item() > 0
    assert student.grad is not None and hint.adapter.weight.grad is not None
    assert teacher.grad is None
