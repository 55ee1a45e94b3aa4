"""Every config group option composes, and the README's combinations instantiate."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fersuite.config import CONFIG_DIR, validate_config
from fersuite.errors import ConfigError

CONF = Path(CONFIG_DIR)
GROUPS = ["data", "model", "loss", "optimizer", "scheduler", "trainer", "callbacks", "logger"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in _options(g)])
def test_every_option_composes(cfg_factory, group: str, option: str) -> None:  # type: ignore[no-untyped-def]
    cfg = cfg_factory([f"{group}={option}"])
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    OmegaConf.to_container(job, resolve=True)  # every interpolation of the job resolves
    assert cfg.task_name == "train"


def test_default_config_has_the_contract_keys(cfg_factory) -> None:  # type: ignore[no-untyped-def]
    cfg = cfg_factory()
    assert cfg.model.arch == "timm" and cfg.model.name == "mobilenetv2_100"
    assert cfg.data.image_size == cfg.model.input_size
    assert cfg.data.in_chans == cfg.model.in_chans
    assert cfg.monitor == "val/acc"


README_COMBOS = [
    [],
    ["model=timm", "model.name=resnet18"],
    ["loss=ce"],
    ["loss=ccc", "optimizer=sgd", "scheduler=none"],
    ["model.in_chans=3", "model.input_size=64"],
]


@pytest.mark.parametrize("overrides", README_COMBOS, ids=lambda o: " ".join(o) or "default")
def test_readme_combinations_instantiate(cfg_factory, overrides: list[str]) -> None:  # type: ignore[no-untyped-def]
    cfg = cfg_factory(overrides)
    validate_config(cfg)
    dm = instantiate(cfg.data)
    net = instantiate(cfg.model, num_classes=dm.num_classes)
    loss = instantiate(cfg.loss)
    assert net.input_spec.size == dm.image_size
    assert loss.expression_weight == 1.0
    opt_factory = instantiate(cfg.optimizer)
    assert opt_factory(params=list(net.parameters())).param_groups


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["optimizer.lr=-1"], "optimizer.lr"),
        (["trainer.max_epochs=0"], "max_epochs"),
        (["model.arch=nope"], "model.arch"),
    ],
)
def test_bad_values_fail_early(cfg_factory, overrides: list[str], match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=match):
        validate_config(cfg_factory(overrides))


def test_unknown_timm_name_is_a_clear_error(cfg_factory) -> None:  # type: ignore[no-untyped-def]
    cfg = cfg_factory(["model.name=not_a_model"])
    with pytest.raises(Exception, match="not a timm model"):
        instantiate(cfg.model, num_classes=8)


def test_pretrained_without_path_fails_at_once(cfg_factory) -> None:  # type: ignore[no-untyped-def]
    cfg = cfg_factory(["model.pretrained=true"])
    with pytest.raises(Exception, match="local weights file"):
        instantiate(cfg.model, num_classes=8)


@pytest.mark.parametrize("name", ["mobilenetv3_small_050", "efficientnet_b0", "convnext_atto"])
def test_timm_families_with_pre_logits_heads(name: str) -> None:
    import torch

    from fersuite.models.timm_backbone import TimmAffectNet

    net = TimmAffectNet(name, num_classes=7, in_chans=1, input_size=64).eval()
    out = net(torch.zeros(2, 1, 64, 64))
    assert out.expression.shape == (2, 7) and out.valence.shape == (2,)


@pytest.mark.parametrize(
    ("overrides", "refused"),
    [
        (["model=emonet"], True),  # random frozen trunk: only the head would train
        (["model=emonet", "task=distill", "distill.teacher_ckpt=t.ckpt"], True),  # student
        (["model=emonet", "model.freeze_trunk=false"], False),  # trains the whole network
        (["model=emonet", "model.pretrained_path=emonet_8.pth"], False),  # official weights
        (["model=emonet", "train=false"], False),  # nothing is trained
    ],
)
def test_emonet_without_weights_is_not_trained_frozen(
    cfg_factory, overrides: list[str], refused: bool
) -> None:  # type: ignore[no-untyped-def]
    cfg = cfg_factory(overrides)
    if not refused:
        validate_config(cfg)
        return
    with pytest.raises(ConfigError) as info:
        validate_config(cfg)
    msg = str(info.value)
    assert "\n" not in msg and "model.pretrained_path" in msg and "model.freeze_trunk" in msg


def test_emonet_teacher_and_profile_need_no_weights(cfg_factory) -> None:  # type: ignore[no-untyped-def]
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    # an EmoNet teacher is not model=...: the student (default timm) is what trains
    validate_config(cfg_factory(["task=distill", "distill.teacher=emonet"]))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        profile = compose(config_name="profile", overrides=["model=emonet"])
    validate_config(profile)  # profiling measures the architecture, weights or not


def test_kd_affectnet_warns_once_without_imagenet_weights(cfg_factory, caplog) -> None:  # type: ignore[no-untyped-def]
    import logging

    def warnings_for(overrides: list[str]) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="fersuite.config"):
            validate_config(cfg_factory(overrides))
        return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]

    kd = "experiment=kd_affectnet"
    (line,) = warnings_for([kd])
    assert line.startswith("model.pretrained_path is not set:") and "ImageNet" in line
    assert "\n" not in line
    for task in ("supervised", "distill"):
        assert len(warnings_for([kd, f"task={task}"])) == 1
    assert warnings_for([kd, "model.pretrained_path=/weights/mobilenetv2_100.safetensors"]) == []
    assert warnings_for(["experiment=mit_fer2013"]) == []  # presets without the key: silent


def test_kd_affectnet_documented_weights_override_resolves_per_student(cfg_factory) -> None:  # type: ignore[no-untyped-def]
    override = "model.pretrained_path=/weights/${model.name}.safetensors"  # as in the README
    for name in ("efficientformer_l3", "mobilenetv2_100"):
        cfg = cfg_factory(["experiment=kd_affectnet", f"model.name={name}", override])
        assert cfg.model.pretrained_path == f"/weights/{name}.safetensors"
