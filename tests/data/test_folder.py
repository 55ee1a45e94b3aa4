"""Image folders: class mapping, splits, valence/arousal CSV, face detection fallback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fersuite.data import faces
from fersuite.data.faces import Box, make_detector
from fersuite.data.folder import FolderDataModule
from fersuite.errors import ConfigError, DataFormatError
from tests.data.fixtures import write_folder


def _dm(root: Path, tmp_path: Path, **kw: object) -> FolderDataModule:
    args: dict[str, object] = {
        "root": str(root),
        "cache_dir": str(tmp_path / "cache"),
        "num_workers": 0,
        "batch_size": 4,
        "in_chans": 3,
        "image_size": 16,
        "val_fraction": 0.25,
    }
    args.update(kw)
    return FolderDataModule(**args)  # type: ignore[arg-type]


def _mean(img: np.ndarray) -> np.ndarray:
    return img.reshape(-1, img.shape[-1]).mean(0) if img.ndim == 3 else np.array([img.mean()])


def test_round_trip_classes_splits_va(tmp_path: Path) -> None:
    w = write_folder(tmp_path / "f", counts={"train": 16, "test": 8})
    dm = _dm(w.root, tmp_path, va_csv="va.csv")
    # aliases mapped through the vocabulary, canonical order
    assert dm.class_names == ("neutral", "happy", "sad", "anger") and dm.has_va
    dm.setup()
    test = w.split("test")
    got = dm.splits["test"]
    order = sorted(range(len(test)), key=lambda i: test[i].path or "")
    assert len(got) == len(test)
    for j, i in enumerate(order):  # the loader lists files sorted by path
        s = test[i]
        assert dm.class_names[int(got.expression[j])] == s.name
        assert np.abs(_mean(got.images[j]) - np.array(s.color)).max() <= 6  # centre square
        assert bool(got.va_mask[j]) == (s.valence is not None)
        if s.valence is not None:
            assert got.valence[j] == pytest.approx(s.valence, abs=1e-6)
            assert got.arousal[j] == pytest.approx(s.arousal, abs=1e-6)
    # no val/ folder: a stratified slice of train (one of the four per class)
    assert len(dm.splits["train"]) == 12 and len(dm.splits["val"]) == 4
    assert sorted(dm.splits["val"].expression.tolist()) == [0, 1, 2, 3]
    assert dm.info["va_rows"] == sum(s.valence is not None for s in w.samples)


def test_val_folder_class_names_and_other_files(tmp_path: Path) -> None:
    w = write_folder(
        tmp_path / "f", counts={"train": 6, "val": 3, "test": 3}, classes=("fear", "Happy", "sad")
    )
    (w.root / "train" / "fear" / "notes.txt").write_text("not an image")
    dm = _dm(w.root, tmp_path, class_names=["sadness", "happy", "fear", "contempt"])
    assert dm.class_names == ("sad", "happy", "fear", "contempt") and not dm.has_va
    dm.setup()
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [6, 3, 3]
    names = [dm.class_names[int(v)] for v in dm.splits["val"].expression]
    assert sorted(names) == ["fear", "happy", "sad"]
    assert dm.splits["val"].valence is None


def test_layout_errors(tmp_path: Path) -> None:
    w = write_folder(tmp_path / "f", counts={"train": 4, "test": 4})
    with pytest.raises(DataFormatError, match=r"train/Anger are not in data\.class_names"):
        _dm(w.root, tmp_path, class_names=["happy", "sad", "neutral"])
    (w.root / "test" / "happy").mkdir()
    with pytest.raises(DataFormatError, match="'happiness' and 'happy' both name class 'happy'"):
        _dm(w.root, tmp_path)
    (w.root / "test" / "happy").rmdir()
    (w.root / "train" / "bored").mkdir()
    with pytest.raises(DataFormatError) as err:
        _dm(w.root, tmp_path)
    assert "bored" in str(err.value) and "neutral, happy, sad" in str(err.value)
    (w.root / "train" / "bored").rmdir()
    for p in (w.root / "test").rglob("*"):
        if p.is_file():
            p.unlink()
    for p in sorted((w.root / "test").rglob("*"), reverse=True):
        p.rmdir()
    (w.root / "test").rmdir()
    with pytest.raises(DataFormatError, match=r"test: not found; expected a directory with train/"):
        _dm(w.root, tmp_path)
    with pytest.raises(DataFormatError, match="does not exist"):
        _dm(tmp_path / "missing", tmp_path)


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("train/sad/nope.jpg,0.1,0.2", "is not an image under"),
        ("{free},1.2,0.2", "valence=1.2 is out of range"),
        ("{free},0.1", "has 2 fields; expected 3"),
        ("train/happiness/000.jpg,0.1,0.2", "listed twice"),
    ],
)
def test_va_csv_bad_rows(tmp_path: Path, row: str, expected: str) -> None:
    w = write_folder(tmp_path / "f", counts={"train": 12, "test": 4})
    path = w.root / "va.csv"
    free = next(s.path for s in w.samples if s.valence is None)  # an image without VA
    path.write_text(path.read_text() + row.format(free=free) + "\n")
    n = len(path.read_text().splitlines())
    with pytest.raises(DataFormatError) as err:
        _dm(w.root, tmp_path, va_csv=str(path)).setup()
    assert f"{path}:{n}: " in str(err.value) and expected in str(err.value)
    dm = _dm(w.root, tmp_path, va_csv=str(path), on_bad_sample="skip")
    dm.setup()
    assert dm.skipped == 1
    with pytest.raises(DataFormatError, match="path,valence,arousal"):
        _dm(w.root, tmp_path, va_csv="other.csv")


def test_odd_images_in_a_folder(tmp_path: Path) -> None:
    """Grayscale JPEG, CMYK, 16-bit, palette, 1x1, LA and 1-bit images, RGB and gray models."""
    root = tmp_path / "f"
    imgs = {
        "gray.jpg": Image.new("L", (20, 20), 200),
        "cmyk.jpg": Image.new("CMYK", (20, 20), (0, 0, 0, 0)),
        "sixteen.png": Image.fromarray(np.full((20, 20), 40000, np.uint16)),
        "palette.png": Image.new("RGB", (20, 20), (10, 200, 30)).quantize(4),
        "one.png": Image.new("RGB", (1, 1), (250, 10, 10)),
        "la.png": Image.new("LA", (20, 20), (120, 255)),
        "bits.png": Image.new("1", (20, 20), 1),
    }
    for split in ("train", "test"):
        for name, img in imgs.items():
            d = root / split / "happy"
            d.mkdir(parents=True, exist_ok=True)
            img.save(d / name)
        (root / split / "sad").mkdir()
        Image.new("RGB", (8, 8), (0, 0, 255)).save(root / split / "sad" / "a.png")
        Image.new("RGB", (8, 8), (0, 0, 255)).save(root / split / "sad" / "b.png")
    assert Image.open(root / "test/happy/sixteen.png").mode.startswith("I")
    expected_rgb = {
        "bits.png": (255, 255, 255),
        "cmyk.jpg": (255, 255, 255),
        "gray.jpg": (200, 200, 200),
        "la.png": (120, 120, 120),
        "one.png": (250, 10, 10),
        "palette.png": (10, 200, 30),
        "sixteen.png": (155, 155, 155),  # 40000 / 65535 * 255, scaled not clipped
    }
    for chans in (3, 1):
        dm = _dm(root, tmp_path / str(chans), in_chans=chans, val_fraction=0.2)
        dm.setup()
        test = dm.splits["test"]
        happy = [i for i in range(len(test)) if dm.class_names[int(test.expression[i])] == "happy"]
        assert len(happy) == len(imgs)
        for i, name in zip(happy, sorted(imgs), strict=True):
            rgb = np.array(expected_rgb[name], dtype=float)
            want = rgb if chans == 3 else np.array([rgb @ [0.299, 0.587, 0.114]])
            assert np.abs(_mean(test.images[i]) - want).max() <= 4, (name, chans)


class _FakeDetector:
    """Finds a face only in images whose top-right corner is not grey."""

    def detect(self, rgb: np.ndarray) -> Box | None:
        if tuple(rgb[10, 60]) == (128, 128, 128):
            return None
        return Box(rgb.shape[1] - 30, 5, 20, 20)


def test_detector_crops_faces_and_counts_fallbacks(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "f"
    for split in ("train", "test"):
        for i in range(4):
            img = Image.new("RGB", (80, 40), (128, 128, 128))
            if i % 2 == 0:  # a "face" in the top-right corner
                img.paste((250, 20, 20), (50, 5, 70, 25))
            d = root / split / ("happy" if i < 2 else "sad")
            d.mkdir(parents=True, exist_ok=True)
            img.save(d / f"{i}.png")
    monkeypatch.setattr("fersuite.data.folder.make_detector", lambda *a, **k: _FakeDetector())
    dm = _dm(root, tmp_path, crop_margin=0.0, val_fraction=0.5)
    dm.setup()
    test = dm.splits["test"]
    means = [_mean(test.images[i]) for i in range(len(test))]
    assert np.abs(means[0] - [250, 20, 20]).max() <= 4  # the detected box
    assert np.abs(means[1] - [128, 128, 128]).max() <= 4  # centre square fallback
    assert dm.info["no_face"] == 4  # every other image of 8


def test_detector_configuration_errors(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import cv2

    assert make_detector("none") is None
    with pytest.raises(ConfigError, match="face_detector='dlib'"):
        make_detector("dlib")
    with pytest.raises(ConfigError, match="mtcnn uses the weights of its package"):
        make_detector("mtcnn", "pnet.onnx")
    with pytest.raises(ConfigError, match=r"YuNet \.onnx model file is required"):
        make_detector("yunet", None)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match=r"not a YuNet \.onnx model"):
        make_detector("yunet", str(junk))
    if hasattr(cv2, "CascadeClassifier"):
        monkeypatch.delattr(cv2, "CascadeClassifier")
    with pytest.raises(ConfigError, match=r"needs cv2\.CascadeClassifier"):
        make_detector("haar")
    w = write_folder(tmp_path / "f", counts={"train": 4, "test": 4})
    with pytest.raises(ConfigError, match="face_detector_model"):
        _dm(w.root, tmp_path, face_detector="yunet")
    assert faces.square_crop(Box(10, 20, 10, 30), 0.5) == (-15.0, 5.0, 45.0, 65.0)


def test_va_csv_pair_is_valid_only_when_both_values_are(tmp_path: Path) -> None:
    w = write_folder(tmp_path / "f", counts={"train": 8, "test": 4}, with_va=False)
    test = sorted(s.path for s in w.split("test") if s.path)
    rows = [f"{test[0]},0.5,-2", f"{test[1]},-2,-0.25", f"{test[2]},-2,-2", f"{test[3]},-1,1"]
    (w.root / "va.csv").write_text("path,valence,arousal\n" + "\n".join(rows) + "\n")
    dm = _dm(w.root, tmp_path, va_csv="va.csv")
    dm.setup()
    got = dm.splits["test"]  # listed in path order
    assert got.va_mask.tolist() == [False, False, False, True]
    assert got.valence[:3].tolist() == [0.0, 0.0, 0.0] == got.arousal[:3].tolist()
    assert (float(got.valence[3]), float(got.arousal[3])) == (-1.0, 1.0)
    assert dm.info["va_rows"] == 4
