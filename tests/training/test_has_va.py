"""A model "has VA" only when the data has VA *and* its loss trains it (defect 7)."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import instantiate

from fersuite.distill.teacher import load_teacher
from fersuite.losses import AffectLoss, DistillationLoss
from fersuite.runs.builders import build_module, checkpoint_metadata
from fersuite.types import AffectOutput
from tests.distill.helpers import distill_overrides, write_teacher_ckpt


def test_losses_say_whether_they_train_va() -> None:
    assert AffectLoss().trains_va
    assert not AffectLoss(valence_weight=0.0, arousal_weight=0.0).trains_va
    assert DistillationLoss().trains_va


def test_loss_ce_on_va_data_reports_no_va(cfg_factory) -> None:  # type: ignore[no-untyped-def]
    for loss, has_va in (("ce", False), ("ce_va", True), ("ccc", True)):
        cfg = cfg_factory([f"loss={loss}", "model=lightweight_cnn", "data.num_workers=0"])
        dm = instantiate(cfg.data)
        assert dm.has_va  # synthetic data has valence/arousal
        module = build_module(cfg, dm)
        assert module.has_va is has_va
        meta = checkpoint_metadata(cfg, dm, has_va=module.has_va)
        assert meta["has_va"] is has_va
        metrics = module.metrics["val_"]
        out = AffectOutput(torch.randn(4, dm.num_classes), torch.rand(4), torch.rand(4))
        batch = {
            "expression": torch.tensor([0, 1, 2, 3]),
            "valence": torch.rand(4),
            "arousal": torch.rand(4),
        }
        metrics.update(out, module._batch_for_loss(batch))
        assert ("valence_ccc" in metrics.compute()) is has_va


def test_a_teacher_without_trained_va_feeds_no_va(cfg_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from fersuite.modules.distill_module import build_distill_module

    path = tmp_path / "teacher.ckpt"
    write_teacher_ckpt(path, has_va=False)  # e.g. a loss=ce run's checkpoint
    assert not load_teacher(teacher_ckpt=str(path)).has_va
    cfg = cfg_factory(distill_overrides(path))
    dm = instantiate(cfg.data)
    module = build_distill_module(cfg, dm)
    assert module.has_va  # the student still trains VA from the labels
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    teacher_out, _ = module.teacher_forward("train", batch)
    with_teacher = module.with_teacher(batch, teacher_out)
    assert "teacher_valence" not in with_teacher and "teacher_arousal" not in with_teacher
    terms = module.loss(module(batch["image"]), with_teacher)
    assert "loss_kd" in terms and "loss_valence" in terms
    assert not any(k.startswith("loss_tb_") for k in terms)
