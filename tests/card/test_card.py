"""The model card: plain-data round trip, pre-card checkpoints, what each dataset records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fersuite.card import FaceCrop, ModelCard
from fersuite.checkpoint import load_model_from_checkpoint, read_card
from fersuite.cli.predict import run
from fersuite.data.preprocess import load_input
from fersuite.errors import ModelCardError, ModelCardFormatError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
LEGACY = FIXTURES / "legacy_lightweight_cnn.ckpt"


def test_a_checkpoint_written_before_the_card_loads_and_predicts(tmp_path: Path) -> None:
    net, card = load_model_from_checkpoint(LEGACY)
    assert card.arch == "lightweight_cnn" and card.kwargs["width_mult"] == 0.25
    assert card.class_names[0] == "neutral" and len(card.class_names) == 7 and card.has_va
    assert (card.input_size, card.in_chans, card.mean, card.std) == (32, 1, (0.5,), (0.5,))
    # no face-crop information: the centre square with EXIF applied (data=folder's crop)
    assert card.face_crop == FaceCrop(kind="center", exif=True) and card.crop_size == 32
    # the same weights as when it was written (outputs recorded by the pre-card code)
    ref = json.loads((FIXTURES / "legacy_lightweight_cnn.outputs.json").read_text())
    g = torch.linspace(-1, 1, 1024).view(1, 1, 32, 32)
    with torch.no_grad():
        out = net(torch.cat([g, g.transpose(2, 3), -g]))
    assert torch.allclose(out.expression, torch.tensor(ref["expression"]), atol=1e-5)
    assert torch.allclose(out.valence, torch.tensor(ref["valence"]), atol=1e-5)
    # and predicts through fersuite-predict
    image = tmp_path / "face.png"
    Image.fromarray(np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8)).save(
        image
    )
    (row,) = run([f"ckpt_path={LEGACY}", f"inputs={image}", "output=null"])
    x, found = load_input(card, image)
    with torch.no_grad():
        probs = net(x.unsqueeze(0)).expression.softmax(1)[0]
    assert found and x.shape == (1, 32, 32)
    assert row["expression"] == card.class_names[int(probs.argmax())]
    assert row["confidence"] == pytest.approx(float(probs.max()), abs=1e-6)


def test_round_trip_is_plain_json() -> None:
    _, card = load_model_from_checkpoint(LEGACY)
    crop = FaceCrop("detector", 0.3, "yunet", 0.7, True, 64)
    card = ModelCard(card.arch, card.kwargs, card.class_names, False, card.input, crop)
    data = json.loads(json.dumps(card.to_dict()))
    assert read_card(data) == card
    assert data["face_crop"]["detector"] == "yunet" and data["input"]["size"] == 32
    assert data["model_cfg"]["_target_"] == "fersuite.models.registry.create_model"


@pytest.mark.parametrize(
    ("crop", "match"),
    [
        ({"kind": "squash"}, "face_crop.kind='squash'"),
        ({"kind": "detector", "detector": "dlib"}, "face_crop.detector='dlib'"),
        ({"kind": "center", "detector": "yunet"}, "goes with kind='detector'"),
        ({"margin": -1}, "face_crop.margin=-1"),
        ({"colour": 1}, "unknown keys"),
    ],
)
def test_bad_face_crop_is_one_line(crop: dict[str, object], match: str) -> None:
    with pytest.raises(ModelCardFormatError, match=match):
        FaceCrop.from_dict(crop)


def test_the_card_check_still_refuses_code() -> None:
    _, card = load_model_from_checkpoint(LEGACY)
    data = card.to_dict()
    data["model_cfg"]["drop_rate"] = {"_target_": "builtins.print"}
    with pytest.raises(ModelCardError, match=r"s\.json: .*model_cfg\.drop_rate\._target_"):
        read_card(data, "s.json")


def test_each_dataset_records_its_face_crop(tmp_path: Path) -> None:
    from fersuite.data.affectnet import AffectNetDataModule
    from fersuite.data.fer2013 import FER2013DataModule
    from fersuite.data.folder import FolderDataModule
    from fersuite.data.rafdb import RAFDBDataModule

    assert FolderDataModule.face_crop.fget is not None  # a property on every datamodule
    kinds = {
        FolderDataModule: "center",
        AffectNetDataModule: "box",
        RAFDBDataModule: "whole",
        FER2013DataModule: "whole",
    }
    for cls, kind in kinds.items():
        dm = cls.__new__(cls)  # no data needed: the property reads settings only
        dm.cache_size, dm.crop_margin = 40, 0.1
        dm.face_detector, dm.face_score_threshold = "none", 0.6
        assert dm.face_crop.kind == kind, cls
        assert dm.face_crop.crop_size == (
            48 if kind == "whole" and cls is FER2013DataModule else 40
        )
    dm = FolderDataModule.__new__(FolderDataModule)
    dm.cache_size, dm.crop_margin, dm.face_detector, dm.face_score_threshold = 40, 0.2, "yunet", 0.7
    assert dm.face_crop == FaceCrop("detector", 0.2, "yunet", 0.7, True, 40)


def test_training_stores_the_datamodules_face_crop(cfg_factory) -> None:  # type: ignore[no-untyped-def]
    from types import SimpleNamespace

    from fersuite.runs.builders import checkpoint_metadata

    cfg = cfg_factory(["model=lightweight_cnn"])
    crop = FaceCrop("detector", 0.2, "yunet", 0.6, True, 64)
    dm = SimpleNamespace(
        class_names=("happy", "sad"), has_va=False, image_size=48, in_chans=1,
        mean=(0.5,), std=(0.5,), face_crop=crop,
    )  # fmt: skip
    card = read_card(json.loads(json.dumps(checkpoint_metadata(cfg, dm))))
    assert card.face_crop == crop and card.crop_size == 64 and card.arch == "lightweight_cnn"
    assert card.class_names == ("happy", "sad") and card.input_size == 48 and not card.has_va
