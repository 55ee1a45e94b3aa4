"""Every setting that changes a loader's cached arrays changes its cache key; others do not.

A setting missing from the key would make a changed run silently reuse old arrays (e.g. a
new AffectNet ``crop_margin`` reading the old crops). Each row below: (setting, new value,
whether the arrays depend on it). Keys are computed without building any cache.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fersuite.data.affectnet import AffectNetDataModule
from fersuite.data.cached import CachedDataModule
from fersuite.data.fer2013 import FER2013DataModule
from fersuite.data.folder import FolderDataModule
from fersuite.data.rafdb import RAFDBDataModule
from fersuite.data.synthetic_datamodule import SyntheticDataModule
from tests.data.fixtures import (
    write_affectnet,
    write_fer2013,
    write_ferplus,
    write_folder,
    write_rafdb,
)

COMMON = {"num_workers": 0, "batch_size": 4, "in_chans": 3, "image_size": 32}
#: Settings no cached array depends on, for every on-disk loader.
NOT_IN_ARRAYS: list[tuple[str, Any, bool]] = [
    ("batch_size", 8, False),
    ("eval_batch_size", 16, False),
    ("num_workers", 1, False),
    ("mean", (0.4, 0.4, 0.4), False),
    ("std", (0.2, 0.2, 0.2), False),
    ("decode_workers", 1, False),
    ("rebuild_cache", True, False),
]
#: The shared image settings of the image datasets (face crops decoded into the cache).
IMAGE_SETTINGS: list[tuple[str, Any, bool]] = [
    ("cache_size", 24, True),
    ("image_size", 40, True),  # the cache size when cache_size is null
    ("in_chans", 1, True),  # grayscale cache
    ("val_fraction", 0.5, True),
    ("split_seed", 3, True),
    ("on_bad_sample", "skip", True),
]


class _FakeDetector:
    def __init__(self, model: str | None) -> None:
        self.model = model

    def detect(self, rgb: Any) -> None:
        return None


def _fer(tmp: Path) -> dict[str, Any]:
    fer = write_fer2013(tmp / "fer", n_per_split=2)
    return {"root": str(fer.root)}


def _ferplus(tmp: Path) -> dict[str, Any]:
    fer = write_fer2013(tmp / "fer", n_per_split=2)
    plus = write_ferplus(tmp / "plus", fer)
    other = write_ferplus(tmp / "plus2", fer, seed=1)
    _ferplus.other = str(other.files[0])  # type: ignore[attr-defined]
    return {"root": str(fer.root), "ferplus_labels": str(plus.files[0])}


def _affectnet(tmp: Path) -> dict[str, Any]:
    w = write_affectnet(tmp / "an", n=8, n_test=8, with_dropped=False)
    return {"root": str(w.root), "crop_margin": 0.1}


def _rafdb(tmp: Path) -> dict[str, Any]:
    w = write_rafdb(tmp / "raf", n_train=7, n_test=7, size=16)
    return {"root": str(w.root)}


def _folder(tmp: Path) -> dict[str, Any]:
    w = write_folder(tmp / "f", counts={"train": 4, "test": 4})
    for name in ("yunet_a.onnx", "yunet_b.onnx"):
        (tmp / name).write_bytes(b"model " + name.encode())
    return {
        "root": str(w.root),
        "face_detector": "yunet",
        "face_detector_model": str(tmp / "yunet_a.onnx"),
        "face_score_threshold": 0.6,
        "crop_margin": 0.2,
    }


LOADERS: dict[str, tuple[type[CachedDataModule], Callable[[Path], dict[str, Any]], list]] = {
    "fer2013": (
        FER2013DataModule,
        _fer,
        [
            ("on_bad_sample", "skip", True),
            # 48x48 grayscale pixel strings are cached as they are
            ("cache_size", 24, False),
            ("image_size", 40, False),
            ("in_chans", 1, False),
            ("val_fraction", 0.5, False),  # FER2013 has official splits
            ("ferplus_mode", "soft", False),  # without FER+ labels
        ],
    ),
    "ferplus": (
        FER2013DataModule,
        _ferplus,
        [
            ("ferplus_mode", "soft", True),
            ("ferplus_labels", "<other>", True),
            ("ferplus_labels", None, True),
            ("on_bad_sample", "skip", True),
        ],
    ),
    "affectnet": (
        AffectNetDataModule,
        _affectnet,
        [*IMAGE_SETTINGS, ("num_classes", 7, True), ("crop_margin", 0.25, True)],
    ),
    "rafdb": (RAFDBDataModule, _rafdb, IMAGE_SETTINGS),
    "folder": (
        FolderDataModule,
        _folder,
        [
            *IMAGE_SETTINGS,
            ("crop_margin", 0.3, True),
            ("class_names", ["anger", "sad", "happy", "neutral"], True),  # another order
            ("class_names", ["neutral", "happy", "sad", "anger", "fear"], True),  # one more
            ("va_csv", "va.csv", True),
            ("face_detector", "none", True),
            ("face_detector_model", "<model_b>", True),
            ("face_detector_model", "<rewritten>", True),  # same path, new file
            ("face_score_threshold", 0.8, True),
        ],
    ),
}


def _value(name: str, value: Any, tmp: Path) -> Any:
    if value == "<other>":
        return _ferplus.other  # type: ignore[attr-defined]
    if value == "<model_b>":
        return str(tmp / "yunet_b.onnx")
    if value == "<rewritten>":
        path = tmp / "yunet_a.onnx"
        path.write_bytes(b"a retrained detector, other weights")
        return str(path)
    return value


CASES = [
    pytest.param(loader, name, value, changes, id=f"{loader}-{name}={value}")
    for loader, (_, _, rows) in LOADERS.items()
    for name, value, changes in [*rows, *NOT_IN_ARRAYS]
]


@pytest.mark.parametrize(("loader", "name", "value", "changes"), CASES)
def test_cache_key_follows_every_array_setting(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    loader: str,
    name: str,
    value: Any,
    changes: bool,
) -> None:
    monkeypatch.setattr(
        "fersuite.data.folder.make_detector",
        lambda kind, model=None, threshold=0.6: None if kind == "none" else _FakeDetector(model),
    )
    cls, write, _ = LOADERS[loader]
    base = {**COMMON, "cache_dir": str(tmp_path / "cache"), **write(tmp_path)}
    before = cls(**base).array_cache()
    changed = cls(**{**base, name: _value(name, value, tmp_path)}).array_cache()
    if changes:
        assert changed.key != before.key, f"{loader}: data.{name} is missing from the cache key"
    else:
        assert changed.key == before.key, f"{loader}: data.{name} needlessly changes the key"


SYNTHETIC_BASE = {"train_size": 8, "val_size": 4, "test_size": 4, "render_size": 32}


@pytest.mark.parametrize(
    ("name", "value", "changes"),
    [
        ("train_size", 9, True),
        ("render_size", 24, True),
        ("seed", 1, True),
        ("difficulty", 0.5, True),
        ("noise", 0.1, True),
        ("lighting", [0.6, 0.0], True),
        ("lighting", [0.0, -0.2], True),
        ("contrast", 0.6, True),
        ("invert", True, True),
        ("lighting", [0, 0], False),  # the default, spelt out
        ("contrast", 1, False),
        ("batch_size", 8, False),
        ("image_size", 24, False),  # resized by the transforms, not in the cache
        ("in_chans", 1, False),
    ],
)
def test_synthetic_cache_key_follows_every_render_setting(
    name: str, value: Any, changes: bool
) -> None:
    base = {**COMMON, **SYNTHETIC_BASE}
    before = SyntheticDataModule(**base).cache_key("train")  # type: ignore[arg-type]
    after = SyntheticDataModule(**{**base, name: value}).cache_key("train")  # type: ignore[arg-type]
    assert (after != before) is changes
