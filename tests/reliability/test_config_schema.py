"""Structured config validation: one readable line naming key, value and what is allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fersuite.config import validate_config
from fersuite.config_schema import signature_of
from fersuite.data.synthetic_datamodule import SyntheticDataModule
from fersuite.errors import ConfigError
from tests._helpers.apps import run_app
from tests.conftest import TINY, run_env


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["model=mit_fer"],
        ["model=lightweight_cnn", "loss=ce", "optimizer=sgd", "scheduler=none"],
        ["logger=csv", "callbacks=none"],
        ["trainer_guard.on_nonfinite=skip", "checkpoint.every_n_train_steps=5"],
    ],
    ids=lambda o: " ".join(o) or "default",
)
def test_shipped_configs_validate(cfg_factory, overrides: list[str]) -> None:  # type: ignore[no-untyped-def]
    validate_config(cfg_factory(overrides))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["+data.batch_szie=8"],
            "data.batch_szie is not a key of SyntheticDataModule; did you mean batch_size?",
        ),
        (["+model.widht_mult=2", "model=lightweight_cnn"], "did you mean width_mult?"),
        (["+optimizer.momentun=0.9", "optimizer=sgd"], "optimizer.momentun is not a key of SGD"),
        (
            ["+trainer.max_epoch=3"],
            "trainer.max_epoch is not a key of Trainer; did you mean max_epochs?",
        ),
        (["+callbacks.model_checkpoint.save_topk=2"], "did you mean save_top_k?"),
        (
            ["+data.augment.hflp=0.5"],
            "data.augment.hflp is not a key of AugmentConfig; did you mean hflip?",
        ),
        (["data.batch_size=big"], "data.batch_size='big'; expected int"),
        (["data.num_workers=1.5"], "data.num_workers=1.5; expected int"),
        (["model.pretrained=maybe"], "model.pretrained='maybe'; expected bool"),
        (["optimizer.lr=-0.1"], "optimizer.lr=-0.1; expected a learning rate > 0"),
        (
            ["model.name=resnet_18"],
            "model.name='resnet_18' is not a timm model; did you mean resnet18?",
        ),
        (["model.arch=vgg"], "model.arch='vgg'; expected one of"),
        (["model.name=efficientformer_l1", "model.input_size=112"], "runs at 224x224 only"),
        (["trainer_guard.on_nonfinite=ignore"], "trainer_guard.on_nonfinite='ignore'"),
        (["trainer_guard.max_skips=-1"], "trainer_guard.max_skips=-1"),
        (["checkpoint.every_n_train_steps=0"], "checkpoint.every_n_train_steps=0"),
        (["callbacks.model_checkpoint._target_=nowhere.Nothing"], "cannot be imported"),
        # a study's report must not fail after its jobs ran: its margins are checked first
        (["report.equivalence_margin.acc=-1"], "report.equivalence_margin.acc=-1; expected"),
        (["+report.equivalence_margin.accuracy=0.02"], "report.equivalence_margin.accuracy"),
        (["report.equivalence_margin.f1_macro=nan"], "report.equivalence_margin.f1_macro=nan"),
    ],
)
def test_bad_configs_fail_in_one_line(cfg_factory, overrides: list[str], expected: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as info:
        validate_config(cfg_factory(overrides))
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


class CountedDataModule(SyntheticDataModule):
    """A dataset that declares the class counts it can provide (like AffectNet: 8 or 7)."""

    supported_num_classes = (8, 7)

    def __init__(self, num_classes: int = 8, **kwargs: Any) -> None:
        super().__init__(**kwargs)


def test_dataset_class_count_is_checked(cfg_factory) -> None:  # type: ignore[no-untyped-def]
    target = f"data._target_={__name__}.CountedDataModule"
    validate_config(cfg_factory([target, "+data.num_classes=7"]))
    with pytest.raises(ConfigError, match=r"data.num_classes=9: CountedDataModule provides 8 or 7"):
        validate_config(cfg_factory([target, "+data.num_classes=9"]))


def test_signature_follows_kwargs_through_the_class_chain() -> None:
    sig = signature_of(SyntheticDataModule)
    assert {"train_size", "batch_size", "augment"} <= set(sig.params)
    assert not sig.open


def test_console_prints_one_line_without_traceback(tmp_path: Path) -> None:
    res = run_app(
        "fersuite-train", [*TINY, "+data.batch_szie=8"], cwd=tmp_path, env=run_env(tmp_path)
    )
    assert res.returncode == 2  # bad input (fersuite.apps)
    err = [line for line in res.stderr.splitlines() if line.strip()]
    assert err[-1] == (
        "fersuite-train: error: data.batch_szie is not a key of SyntheticDataModule; "
        "did you mean batch_size? (keys: " + err[-1].split("(keys: ", 1)[1]
    )
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "cache").exists()  # failed before any data was generated


def test_affectnet_num_classes_fails_before_reading_data(cfg_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = cfg_factory(["data=affectnet", f"data.root={tmp_path / 'absent'}", "data.num_classes=6"])
    with pytest.raises(
        ConfigError, match=r"data.num_classes=6: AffectNetDataModule provides 8 or 7"
    ):
        validate_config(cfg)
