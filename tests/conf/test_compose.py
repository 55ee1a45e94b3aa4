"""Configs compose: the loader keys come from one file, the reliability settings sit with
their callbacks, and the module of each task is named by its config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fersuite.config import CONFIG_DIR

DATASETS = ["affectnet", "fer2013", "folder", "rafdb", "synthetic"]
LOADER = yaml.safe_load((Path(CONFIG_DIR) / "data" / "_loader.yaml").read_text())


@pytest.mark.parametrize("name", DATASETS)
def test_every_dataset_takes_the_loader_keys_from_one_file(cfg_factory, name: str) -> None:  # type: ignore[no-untyped-def]
    own = yaml.safe_load((Path(CONFIG_DIR) / "data" / f"{name}.yaml").read_text())
    assert own["defaults"][0] == "_loader"
    assert not set(LOADER) & set(own), "a loader key is repeated in the dataset's file"
    data = cfg_factory([f"data={name}", "data.batch_size=8"]).data
    assert data.batch_size == 8 and data.eval_batch_size == LOADER["eval_batch_size"]
    assert dict(data.augment) == LOADER["augment"]


def test_checkpoint_and_guard_settings_live_with_their_callbacks(cfg_factory) -> None:  # type: ignore[no-untyped-def]
    train = yaml.safe_load((Path(CONFIG_DIR) / "train.yaml").read_text())
    assert "checkpoint" not in train and "trainer_guard" not in train
    cfg = cfg_factory(["trainer_guard.on_nonfinite=skip", "checkpoint.every_n_train_steps=5"])
    assert cfg.callbacks.nonfinite_guard.on_nonfinite == "skip"
    assert cfg.callbacks.periodic_checkpoint.every_n_train_steps == 5


@pytest.mark.parametrize(
    ("task", "builder"),
    [
        ("supervised", "fersuite.modules.affect_module.build_affect_module"),
        ("distill", "fersuite.modules.distill_module.build_distill_module"),
    ],
)
def test_each_task_names_its_module(cfg_factory, task: str, builder: str) -> None:  # type: ignore[no-untyped-def]
    cfg = cfg_factory([f"task={task}"])
    assert cfg.task.module._target_ == builder
    assert cfg.task.module._partial_ is True
