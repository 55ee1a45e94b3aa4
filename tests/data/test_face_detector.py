"""The default face detector (MTCNN, bundled) on real photos, and how predict uses it.

The photos are scikit-image's sample images (``tests/fixtures/faces/SOURCES.md``): a portrait
(public domain), a man with a camera, a cat and a coffee cup (CC0). The group, small-face, grey
and tilted cases are built from them here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fersuite.card import FaceCrop, ModelCard
from fersuite.checkpoint import read_card
from fersuite.data import faces
from fersuite.data.faces import Box, FaceFinder, load_face
from fersuite.errors import ModelCardFormatError
from fersuite.inference import choose_face_crop

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "faces"
#: hand-set face boxes (brow/hairline to chin), fixture pixels
ASTRONAUT = Box(111, 47, 59, 70)
CAMERAMAN = Box(97, 55, 31, 42)


def iou(a: Box, b: Box) -> float:
    iw = max(0.0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    ih = max(0.0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    inter = iw * ih
    return inter / (a.w * a.h + b.w * b.h - inter)


def photo(name: str) -> Image.Image:
    return Image.open(FIX / name).convert("RGB")


def frame(background: str = "coffee.jpg") -> Image.Image:
    """A 640×480 frame of a real face-free photo."""
    return photo(background).resize((640, 480), Image.Resampling.BILINEAR)


def head(face_h: float, mirror: bool = False) -> tuple[Image.Image, Box]:
    """The astronaut's head and shoulders scaled so her face is ``face_h`` px high, with the
    face box inside the patch."""
    patch = photo("astronaut.jpg").crop((85, 12, 195, 145))
    s = face_h / ASTRONAUT.h
    patch = patch.resize(
        (round(patch.width * s), round(patch.height * s)), Image.Resampling.LANCZOS
    )
    x = (ASTRONAUT.x - 85) * s
    if mirror:
        patch = patch.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        x = patch.width - x - ASTRONAUT.w * s
    return patch, Box(x, (ASTRONAUT.y - 12) * s, ASTRONAUT.w * s, ASTRONAUT.h * s)


def paste(img: Image.Image, patch: Image.Image, at: tuple[int, int], box: Box) -> Box:
    img.paste(patch, at)
    return Box(box.x + at[0], box.y + at[1], box.w, box.h)


@pytest.fixture(scope="module")
def mtcnn() -> faces.FaceDetector:
    det = faces.make_detector("mtcnn")
    assert det is not None
    return det


def best_match(found: list[Box], want: Box) -> tuple[float, Box | None]:
    scored = [(iou(b, want), b) for b in found]
    return max(scored, key=lambda t: t[0]) if scored else (0.0, None)


@pytest.mark.parametrize("grey", [False, True])
def test_portrait(mtcnn: faces.FaceDetector, grey: bool) -> None:
    img = photo("astronaut.jpg")
    if grey:
        img = img.convert("L").convert("RGB")
    box = mtcnn.detect(np.asarray(img))
    assert box is not None
    assert iou(box, ASTRONAUT) > 0.6, box
    assert box.score is not None and box.score >= 0.9
    assert box.eyes is not None and abs(box.tilt) < 8  # she holds her head nearly level


def test_group_photo(mtcnn: faces.FaceDetector) -> None:
    img = frame("coffee.jpg")
    want = []
    for face_h, at, mirror in (
        (80, (20, 200), False),
        (55, (250, 60), True),
        (40, (420, 280), False),
    ):
        patch, box = head(face_h, mirror)
        want.append(paste(img, patch, at, box))
    man = photo("cameraman.jpg").crop((70, 30, 150, 120))
    want.append(paste(img, man, (540, 40), Box(CAMERAMAN.x - 70, CAMERAMAN.y - 30, 31, 42)))
    found = faces.detect_faces(mtcnn, np.asarray(img))
    assert len(found) == 4, found
    for w in want:
        assert best_match(found, w)[0] > 0.4, (w, found)
    assert found == sorted(found, key=lambda b: -b.w * b.h)  # largest first
    assert all(b.score is not None and b.score >= 0.9 for b in found)


@pytest.mark.parametrize(("grey", "angle"), [(False, 0), (True, 0), (False, 15)])
def test_a_25px_face_in_a_640x480_frame(mtcnn: faces.FaceDetector, grey: bool, angle: int) -> None:
    img = frame("coffee.jpg")
    patch, box = head(25)
    if angle:
        rgba = patch.convert("RGBA").rotate(angle, Image.Resampling.BICUBIC, expand=True)
        img.paste(rgba, (400, 120), rgba)
        cx, cy = 400 + rgba.width / 2, 120 + rgba.height / 2  # the face stays near the middle
        want = Box(cx - box.w / 2 - 2, cy - box.h / 2 - 6, box.w, box.h)
    else:
        want = paste(img, patch, (400, 120), box)
    if grey:
        img = img.convert("L").convert("RGB")
    found = faces.detect_faces(mtcnn, np.asarray(img))
    assert len(found) == 1, found
    assert iou(found[0], want) > 0.35, (found, want)
    assert 18 <= found[0].h <= 32


def test_a_tilted_face_is_cut_with_level_eyes(mtcnn: faces.FaceDetector) -> None:
    img = photo("astronaut.jpg")
    upright = mtcnn.detect(np.asarray(img))
    tilted = img.rotate(15, Image.Resampling.BICUBIC)  # counter-clockwise
    box = mtcnn.detect(np.asarray(tilted))
    assert upright is not None and box is not None
    assert box.tilt == pytest.approx(upright.tilt - 15, abs=4)
    cut = faces.cut_face(tilted, "RGB", 160, box, 0.4)
    again = mtcnn.detect(cut)
    assert again is not None and abs(again.tilt - upright.tilt) < abs(box.tilt - upright.tilt) - 8


@pytest.mark.parametrize("name", ["chelsea.jpg", "coffee.jpg"])
def test_no_face(mtcnn: faces.FaceDetector, name: str) -> None:
    assert faces.detect_faces(mtcnn, np.asarray(frame(name))) == []


def test_load_face_reports_found_no_face_and_precropped(
    mtcnn: faces.FaceDetector, tmp_path: Path
) -> None:
    finder = FaceFinder(mtcnn, precropped_max_side=96)
    arr, found = load_face(FIX / "astronaut.jpg", "L", 48, margin=0.2, detector=finder)
    assert found and arr.shape == (48, 48)
    last = finder.last
    assert last is not None and last.status == "found" and last.box is not None
    cols = finder.columns()
    assert cols["face"] == "found" and cols["face_score"] >= 0.9  # type: ignore[operator]
    assert iou(Box(*(float(v) for v in str(cols["face_box"]).split())), ASTRONAUT) > 0.6

    _, found = load_face(FIX / "chelsea.jpg", "L", 48, detector=finder)
    assert not found and finder.columns() == {"face": "no_face", "face_box": "", "face_score": None}

    class Never:
        def detect(self, rgb: np.ndarray) -> Box | None:
            raise AssertionError("an already-cut face is not searched")

    small = tmp_path / "cut.png"
    photo("astronaut.jpg").crop((90, 30, 190, 130)).resize((90, 90)).save(small)
    arr, found = load_face(small, "L", 48, detector=FaceFinder(Never(), 96))
    plain, _ = load_face(small, "L", 48)
    assert found and np.array_equal(arr, plain)  # the centre square, as without a detector


def _card(kind: str = "whole", **crop: object) -> ModelCard:
    return read_card(
        {
            "card_version": 1,
            "model_cfg": {
                "_target_": "fersuite.models.registry.create_model",
                "arch": "lightweight_cnn",
                "in_chans": 1,
                "input_size": 48,
            },
            "class_names": ["happy", "sad"],
            "has_va": False,
            "input": {"size": 48, "channels": 1, "mean": [0.5], "std": [0.5]},
            "face_crop": {"kind": kind, **crop},
        },
        "m.json",
    )


def test_predict_chooses_the_default_detector_with_the_cut_face_rule() -> None:
    crop, det = choose_face_crop(_card("whole"))
    assert isinstance(det, FaceFinder) and isinstance(det.detector, faces.MtcnnDetector)
    assert crop is not None and crop.detector == "mtcnn" and crop.score_threshold == 0.9
    assert det.precropped_max_side == crop.precropped_max_side == 96  # twice the 48 px crop
    assert "an image up to 96 px a side is a cut face" in crop.describe()
    crop, det = choose_face_crop(_card("whole"), "none")  # centre square only when asked
    assert det is None and crop == FaceCrop(kind="center")
    crop, det = choose_face_crop(_card("whole"), "mtcnn")  # named: every image searched
    assert det.precropped_max_side == 0 and "every image searched" in crop.describe()  # type: ignore[union-attr]
    card = _card(
        "detector", detector="mtcnn", margin=0.3, score_threshold=0.8, precropped_max_side=120
    )
    crop, det = choose_face_crop(card)
    assert (crop.margin, crop.score_threshold, det.precropped_max_side) == (0.3, 0.8, 120)  # type: ignore[union-attr]


@pytest.mark.parametrize("bad", [-1, 1.5, "96", True, 10**6])
def test_the_card_bounds_precropped_max_side(bad: object) -> None:
    with pytest.raises(ModelCardFormatError, match=r"face_crop\.precropped_max_side"):
        FaceCrop.from_dict({"kind": "whole", "precropped_max_side": bad})
    crop = FaceCrop.from_dict({"kind": "whole", "precropped_max_side": 64})
    assert FaceCrop.from_dict(json.loads(json.dumps(crop.to_dict()))) == crop
    assert FaceCrop().precropped_limit(40) == 80 and crop.precropped_limit(40) == 64


def test_fersuite_predict_finds_the_face_in_a_portrait(tmp_path: Path) -> None:
    from fersuite.cli.predict import main
    from tests.export.helpers import ZOO, make_checkpoint

    ckpt, _ = make_checkpoint(tmp_path / "m.ckpt", ZOO["lightweight_cnn"], seed=3)
    out = tmp_path / "p.json"
    inputs = f"inputs=[{FIX / 'astronaut.jpg'},{FIX / 'chelsea.jpg'}]"
    assert main([f"ckpt_path={ckpt}", inputs, f"output={out}"]) == 0
    rows = {Path(r["file"]).name: r for r in json.loads(out.read_text())}
    face = rows["astronaut.jpg"]
    assert face["face_found"] is True and face["face"] == "found"
    assert iou(Box(*map(float, face["face_box"].split())), ASTRONAUT) > 0.5
    assert face["face_score"] >= 0.9 and face["expression"]
    cat = rows["chelsea.jpg"]  # no face: said so, and no expression guessed
    assert cat["face"] == "no_face" and cat["face_found"] is False
    assert cat.get("expression") is None and cat["face_box"] in ("", None)


def test_the_folder_dataset_trains_on_the_crop_predict_serves(tmp_path: Path) -> None:
    import shutil

    from fersuite.data.folder import FolderDataModule
    from fersuite.data.preprocess import decode_face

    root = tmp_path / "f"
    for split in ("train", "test"):
        for cls, names in (
            ("happy", ("astronaut.jpg", "cameraman.jpg")),
            ("sad", ("chelsea.jpg", "coffee.jpg")),
        ):
            (root / split / cls).mkdir(parents=True)
            for n in names:
                shutil.copy(FIX / n, root / split / cls / n)
    dm = FolderDataModule(
        root=str(root), cache_dir=str(tmp_path / "cache"), num_workers=0, batch_size=2,
        in_chans=1, image_size=48, val_fraction=0.5, face_detector="mtcnn",
    )  # fmt: skip
    dm.setup()
    assert dm.info["no_face"] == 4  # the cat and the coffee, in train and test; both faces found
    card = _card("detector", **{k: v for k, v in dm.face_crop.to_dict().items() if k != "kind"})
    crop, finder = choose_face_crop(card)
    served, found = decode_face(crop, root / "test/happy/astronaut.jpg", 1, 48, finder)
    assert found and np.array_equal(dm.splits["test"].images[0].reshape(48, 48), served)
