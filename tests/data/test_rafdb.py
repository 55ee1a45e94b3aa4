"""RAF-DB basic: round trip, label mapping, splits, bad lines, bad images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fersuite.data.rafdb import RAFDB_CLASSES, RAFDBDataModule
from fersuite.errors import DataFormatError
from fersuite.labels import canonical_name
from tests.data.fixtures import RAFDB_NAMES, write_rafdb

LABELS = "EmoLabel/list_patition_label.txt"


def _dm(root: Path, tmp_path: Path, **kw: object) -> RAFDBDataModule:
    args: dict[str, object] = {
        "root": str(root),
        "cache_dir": str(tmp_path / "cache"),
        "num_workers": 0,
        "batch_size": 4,
        "in_chans": 3,
        "image_size": 24,
        "val_fraction": 0.3,
    }
    args.update(kw)
    return RAFDBDataModule(**args)  # type: ignore[arg-type]


def _center(img: np.ndarray) -> np.ndarray:
    c = img.shape[0] // 2
    return img[c - 3 : c + 3, c - 3 : c + 3].reshape(-1, 3).mean(0)


def test_round_trip(tmp_path: Path) -> None:
    w = write_rafdb(tmp_path / "raf", n_train=21, n_test=7)
    dm = _dm(w.root, tmp_path)
    assert dm.class_names == RAFDB_CLASSES
    assert [
        canonical_name(n)
        for n in ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")
    ] == list(RAFDB_NAMES)
    dm.setup()
    test = w.split("test")
    got = dm.splits["test"]
    assert len(got) == len(test)
    for i, s in enumerate(test):
        assert dm.class_names[int(got.expression[i])] == s.name
        assert np.abs(_center(got.images[i]) - np.array(s.color)).max() <= 6
    train = w.split("train")
    assert len(dm.splits["train"]) + len(dm.splits["val"]) == len(train)
    # stratified: 3 per class in train -> 1 per class in val
    assert sorted(dm.splits["val"].expression.tolist()) == list(range(7))
    assert dm.splits["train"].images.shape[1:] == (24, 24, 3)
    assert not dm.has_va and dm.splits["train"].valence is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("train_00003.jpg", "has 1 fields"),
        ("train_00003.jpg 8", "label 8 is out of range; expected 1..7"),
        ("train_00003.jpg x", "label 'x' is not an integer"),
        ("val_00003.jpg 2", "must start with train_ or test_"),
        ("train_00001.jpg 1", "listed twice"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path: Path, text: str, expected: str) -> None:
    w = write_rafdb(tmp_path / "raf", n_train=21, n_test=7)
    path = w.root / LABELS
    lines = path.read_text().splitlines()
    lines[2] = text
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError) as err:
        _dm(w.root, tmp_path).setup()
    assert f"{path}:3: " in str(err.value) and expected in str(err.value)
    dm = _dm(w.root, tmp_path, on_bad_sample="skip")
    dm.setup()
    assert dm.skipped == 1
    assert sum(len(s) for s in dm.splits.values()) == 27


def test_missing_and_corrupt_images(tmp_path: Path) -> None:
    w = write_rafdb(tmp_path / "raf", n_train=21, n_test=7)
    gone = w.root / "Image/aligned/test_00002_aligned.jpg"
    gone.unlink()
    with pytest.raises(DataFormatError, match=f"{gone} .*image not found"):
        _dm(w.root, tmp_path).setup()
    bad = w.root / "Image/aligned/test_00003_aligned.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 50)
    dm = _dm(w.root, tmp_path, on_bad_sample="skip")
    dm.setup()
    assert dm.skipped == 2 and len(dm.splits["test"]) == 5
    assert dm.info["skip_reasons"] == {"unreadable image": 2}


def test_missing_label_file(tmp_path: Path) -> None:
    w = write_rafdb(tmp_path / "raf")
    (w.root / LABELS).unlink()
    with pytest.raises(DataFormatError, match=r"list_patition_label\.txt: not found; expected"):
        _dm(w.root, tmp_path).setup()
