"""DistillationModule in process: frozen teacher, gradients, checkpoints, metrics, configs."""

from __future__ import annotations

import copy
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from fersuite.checkpoint import load_model_from_checkpoint, training_card
from fersuite.distill.teacher import load_teacher
from fersuite.errors import ConfigError, PretrainedWeightsError
from fersuite.models.emonet import EmoNet
from fersuite.modules.distill_module import DistillationModule, build_distill_module
from tests.conftest import compose_train
from tests.distill.helpers import distill_overrides, write_teacher_ckpt


def _build(composed, *values: str, groups: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    """(config, datamodule, module) of the distillation config composed with ``groups``
    (config-group overrides, e.g. ``loss=ce_va``) and the value overrides ``values`` set on
    a copy of it, each to the value Hydra's override parser gives it."""
    cfg = copy.deepcopy(composed(*groups))
    for override in OverridesParser.create().parse_overrides(list(values)):
        OmegaConf.update(cfg, override.key_or_group, override.value(), merge=False)
    dm = instantiate(cfg.data)
    module = build_distill_module(cfg, dm)
    return cfg, dm, module


def _trainer(tmp_path: Path, epochs: int = 1) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=1,
        default_root_dir=str(tmp_path),
    )


def _meta(cfg, dm) -> dict:  # type: ignore[no-untyped-def]
    return training_card(
        model_cfg=OmegaConf.to_container(cfg.model, resolve=True),
        class_names=tuple(dm.class_names),
        has_va=dm.has_va,
        input_size=dm.image_size,
        in_chans=dm.in_chans,
        mean=tuple(dm.mean),
        std=tuple(dm.std),
    )


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The teacher every test distils from (read-only: the tests load it, never write it)."""
    path = tmp_path_factory.mktemp("teacher") / "teacher.ckpt"
    write_teacher_ckpt(path)
    return path


@pytest.fixture(scope="module")
def composed(teacher_ckpt: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """``composed(*groups)``: the distillation config (distill_overrides) composed once per
    module for each list of config-group overrides (composing takes most of a build). Read
    it only: :func:`_build` works on a copy."""
    base = tmp_path_factory.mktemp("distill_cfg")
    made: dict[tuple[str, ...], DictConfig] = {}

    def get(*groups: str) -> DictConfig:
        if groups not in made:
            made[groups] = compose_train(distill_overrides(teacher_ckpt, *groups), base)
            GlobalHydra.instance().clear()
        return made[groups]

    return get


def test_teacher_is_frozen_unregistered_and_outside_the_optimizer(
    composed,
) -> None:  # type: ignore[no-untyped-def]
    _, _, module = _build(composed, groups=("scheduler=none",))
    assert isinstance(module, DistillationModule)
    teacher = module.teacher
    module.train()
    assert not teacher.training and not teacher.net.training
    assert all(not m.training for m in teacher.net.modules())
    assert all(not p.requires_grad for p in teacher.parameters())
    assert not [k for k in module.state_dict() if not k.startswith(("net.", "best."))]
    optimizer = module.configure_optimizers()
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert not in_optimizer & {id(p) for p in teacher.parameters()}
    assert {id(p) for p in module.net.parameters()} <= in_optimizer
    # teacher 64x64 RGB, student 48x48 gray: adapted per model, not a second pipeline
    assert teacher.input_spec.size == 64 and module.student_spec.size == 48


def test_gradients_reach_the_student_only(composed) -> None:  # type: ignore[no-untyped-def]
    _, dm, module = _build(composed)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    module.train()
    loss = module.training_step(batch, 0)
    loss.backward()
    assert all(p.grad is None for p in module.teacher.parameters())
    grads = [p.grad for p in module.net.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0


def test_training_leaves_the_teacher_unchanged_and_saves_a_plain_student(
    composed, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    cfg, dm, module = _build(composed, "data.train_size=16")  # one step changes the student
    module.checkpoint_meta = _meta(cfg, dm)
    before_teacher = {k: v.clone() for k, v in module.teacher.net.state_dict().items()}
    before_student = {k: v.clone() for k, v in module.net.state_dict().items()}
    trainer = _trainer(tmp_path)
    trainer.fit(module, datamodule=dm)
    assert {"teacher/val/acc", "val/gap_acc"} <= set(trainer.callback_metrics)

    after = module.teacher.net.state_dict()
    assert all(torch.equal(before_teacher[k], after[k]) for k in before_teacher)  # BN buffers too
    assert not module.teacher.training
    assert any(not torch.equal(before_student[k], v) for k, v in module.net.state_dict().items())

    path = tmp_path / "student.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert ckpt["state_dict"] and all(k.startswith("net.") for k in ckpt["state_dict"])
    assert ckpt["fersuite"]["input_size"] == 48 and ckpt["fersuite"]["in_chans"] == 1
    net, meta = load_model_from_checkpoint(path)
    x = torch.randn(3, 1, 48, 48)
    module.eval()
    with torch.no_grad():
        assert torch.allclose(net(x).expression, module.net(x).expression, atol=1e-6)
    assert meta.class_names == tuple(dm.class_names)

    # testing from that checkpoint: teacher metrics once, and student - teacher gaps
    trainer.test(module, datamodule=dm, ckpt_path=str(path), weights_only=True)
    m = trainer.callback_metrics
    for key in (
        "teacher/test/acc",
        "test/gap_acc",
        "test/gap_valence_ccc",
        "test/gap_arousal_rmse",
    ):
        assert key in m, key
    assert float(m["test/gap_acc"]) == pytest.approx(
        float(m["test/acc"]) - float(m["teacher/test/acc"]), abs=1e-6
    )
    assert set(module.teacher_values) == {"val", "test"}


def test_feature_hint_trains_an_adapter_kept_out_of_the_student(composed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg, dm, module = _build(composed, "loss.hint_weight=0.5", "data.train_size=16")
    assert module.hint is not None
    module.checkpoint_meta = _meta(cfg, dm)
    trainer = _trainer(tmp_path)
    trainer.fit(module, datamodule=dm)
    assert "train/loss_hint" in trainer.callback_metrics
    path = tmp_path / "hint.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert all(k.startswith("net.") for k in ckpt["state_dict"])
    assert any(k.startswith("hint.") for k in ckpt["distill_module_state"])
    load_model_from_checkpoint(path)


def test_bad_settings_fail_with_their_key(composed, teacher_ckpt: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=r"distill\.teacher_ckpt is required"):
        _build(composed, "distill.teacher_ckpt=null")
    with pytest.raises(ConfigError, match=r"distill\.teacher_ckpt=.*file not found"):
        _build(composed, f"distill.teacher_ckpt={teacher_ckpt.with_name('nope.ckpt')}")
    with pytest.raises(ValueError, match=r"distill\.teacher_outputs='sometimes'"):
        _build(composed, "distill.teacher_outputs=sometimes")
    with pytest.raises(ConfigError, match="loss=kd"):
        _build(composed, groups=("loss=ce_va",))
    with pytest.raises(ValueError, match="hint_weight"):
        _build(composed, "loss.hint_weight=1", "distill.teacher_outputs=cached")


def test_task_distill_selects_the_kd_loss(composed) -> None:  # type: ignore[no-untyped-def]
    cfg = composed()
    assert cfg.task.name == "distill"
    assert cfg.loss._target_ == "fersuite.losses.DistillationLoss"
    assert cfg.distill.teacher_outputs == "live"


def _save_emonet(path: Path, num_classes: int) -> None:
    torch.manual_seed(0)
    net = EmoNet(num_expressions=num_classes, num_stacks=2)
    torch.save(net.state_dict(), path)


def test_emonet_teacher_infers_its_classes_and_input(tmp_path: Path) -> None:
    path = tmp_path / "emonet8.pth"
    _save_emonet(path, 8)
    teacher = load_teacher("emonet", teacher_weights=str(path), teacher_input_size=64)
    assert teacher.class_names[0] == "neutral" and teacher.class_names[-1] == "contempt"
    assert teacher.input_spec.size == 64 and teacher.input_spec.channels == 3
    assert teacher.input_spec.mean == (0.0, 0.0, 0.0) and teacher.input_spec.std == (1.0,) * 3
    assert len(teacher.weights_sha256) == 64
    out = teacher(torch.rand(1, 3, 64, 64))
    assert out.expression.shape == (1, 8) and not out.expression.requires_grad
    with pytest.raises(ValueError, match=r"distill\.teacher_weights"):
        load_teacher("emonet")
    with pytest.raises(ValueError, match="teacher_input_size only applies"):
        load_teacher("checkpoint", teacher_ckpt=str(path), teacher_input_size=64)
    bad = tmp_path / "not_emonet.pth"
    torch.save({"w": torch.zeros(2)}, bad)
    with pytest.raises(PretrainedWeightsError, match="not an EmoNet state dict"):
        load_teacher("emonet", teacher_weights=str(bad))


def test_the_live_teacher_sees_the_batch_augmented_and_mixed_images(
    composed, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from fersuite.distill.adapt import adapt_images

    _, dm, module = _build(composed, "data.augment.device=batch", "data.augment.mixup=0.4")
    student_in: list[torch.Tensor] = []
    teacher_in: list[torch.Tensor] = []
    module.net.register_forward_pre_hook(
        lambda m, a: student_in.append(a[0].detach()) if m.training else None
    )
    module.teacher.net.register_forward_pre_hook(lambda m, a: teacher_in.append(a[0].detach()))
    trainer = _trainer(tmp_path)
    trainer.limit_val_batches = 0
    trainer.fit(module, datamodule=dm)
    assert len(student_in) == 2 and len(teacher_in) >= 2  # 32 images, batch 16
    first = student_in[0]
    assert first.dtype == torch.float32 and float(first.min()) < 0  # augmented and normalised
    expected = adapt_images(first, module.data_spec, module.teacher.input_spec)
    torch.testing.assert_close(teacher_in[0], expected)
