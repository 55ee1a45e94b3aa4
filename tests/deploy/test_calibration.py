"""Calibration and held-out images of a quantised export (fersuite.deploy.calibration)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from fersuite.card import ModelCard
from fersuite.checkpoint import read_card
from fersuite.data.record import training_data_record
from fersuite.deploy.calibration import data_config_for, datamodule_for_card, image_batches
from fersuite.errors import ConfigError, UntrustedFileError
from fersuite.labels import CANONICAL_CLASSES
from fersuite.runs.builders import checkpoint_metadata
from tests.conftest import TINY

SYNTH = "fersuite.data.synthetic_datamodule.SyntheticDataModule"


def _card(classes: tuple[str, ...] = CANONICAL_CLASSES, size: int = 32) -> ModelCard:
    return read_card(
        {
            "model_cfg": {
                "_target_": "fersuite.models.registry.create_model",
                "arch": "lightweight_cnn",
                "in_chans": 1,
                "input_size": size,
            },
            "class_names": list(classes),
            "has_va": True,
            "input": {"size": size, "channels": 1, "mean": [0.5], "std": [0.5]},
        }
    )


def test_checkpoints_record_their_training_data_as_plain_values(cfg_factory) -> None:
    from hydra.utils import instantiate

    cfg = cfg_factory(["data=synthetic", "model=lightweight_cnn", *TINY])
    dm = instantiate(cfg.data)
    meta = checkpoint_metadata(cfg, dm)
    record = meta["training_data"]
    assert record["target"] == SYNTH
    assert record["values"]["train_size"] == 96
    assert "_target_" not in record["values"]
    # plain data only: it must survive a weights_only checkpoint round trip
    assert OmegaConf.create(record) is not None


def test_recorded_data_is_mapped_onto_the_shipped_config_never_instantiated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FERSUITE_CACHE", str(tmp_path / "local_cache"))
    GlobalHydra.instance().clear()
    cfg = OmegaConf.create({"data": None})
    record = {
        "target": SYNTH,
        "values": {
            "train_size": 40,
            "val_size": 30,
            # where this machine writes is this machine's choice, never the record's
            "cache_dir": str(tmp_path / "their_cache"),
            "not_a_key_of_the_config": 1,
            # a nested node naming code is dropped, not copied onto the trusted config
            "augment": {"_target_": "builtins.open", "file": str(tmp_path / "x")},
            "image_size": 999,  # the input spec comes from the model card
        },
    }
    data = data_config_for(cfg, record, "ckpt", "export.quantize=int8")
    assert data._target_ == SYNTH
    assert data.train_size == 40 and data.val_size == 30
    assert "not_a_key_of_the_config" not in data
    assert "_target_" not in OmegaConf.to_container(data.augment)
    dm = datamodule_for_card(data, _card())
    assert dm.image_size == 32 and len(dm.splits["train"]) == 40
    assert not (tmp_path / "x").exists()
    assert not (tmp_path / "their_cache").exists() and (tmp_path / "local_cache").is_dir()


@pytest.mark.parametrize("record", [None, {"target": "builtins.open", "values": {}}])
def test_no_known_dataset_is_one_line_error(record: dict | None) -> None:
    GlobalHydra.instance().clear()
    with pytest.raises(ConfigError, match=r"data=") as err:
        data_config_for(OmegaConf.create({"data": None}), record, "m.ckpt", "export.quantize=int8")
    assert "\n" not in str(err.value)


def test_a_record_without_a_target_is_refused_as_a_malformed_file() -> None:
    GlobalHydra.instance().clear()
    with pytest.raises(UntrustedFileError, match=r"m.ckpt: training_data.target=None"):
        data_config_for(
            OmegaConf.create({"data": None}), {"values": {"train_size": 3}}, "m.ckpt", "int8"
        )


def test_record_of_unresolvable_config_is_none() -> None:
    assert training_data_record(None) is None
    assert training_data_record(OmegaConf.create({"_target_": "x", "a": "${nope}"})) is None


def test_image_batches_are_unaugmented_seeded_and_in_the_models_class_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FERSUITE_CACHE", str(tmp_path / "c"))
    GlobalHydra.instance().clear()
    record = {
        "target": SYNTH,
        "values": {"train_size": 50, "val_size": 20, "cache_dir": str(tmp_path / "c")},
    }
    data = data_config_for(OmegaConf.create({"data": None}), record, "ckpt", "int8")
    card = _card()
    dm = datamodule_for_card(data, card)
    a = list(image_batches(dm, "train", 37, card, batch_size=16, seed=3))
    b = list(image_batches(dm, "train", 37, card, batch_size=16, seed=3))
    assert [x.shape[0] for x, _ in a] == [16, 16, 5]
    assert a[0][0].shape[1:] == (1, 32, 32)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):  # evaluation transform: no augmentation
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # a model whose classes are the dataset's in reverse order: labels follow the model
    rev = _card(tuple(reversed(CANONICAL_CLASSES)))
    (x, y), *_ = image_batches(dm, "val", 20, card, batch_size=20)
    (xr, yr), *_ = image_batches(dm, "val", 20, rev, batch_size=20)
    assert torch.equal(x, xr)
    assert torch.equal(yr, len(CANONICAL_CLASSES) - 1 - y)
