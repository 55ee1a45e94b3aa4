"""``data=rafdb``: RAF-DB basic emotions, aligned faces.

Layout under ``root``: ``EmoLabel/list_patition_label.txt`` (sic), one ``train_00001.jpg 5``
per line, labels 1..7 = surprise, fear, disgust, happiness, sadness, anger, neutral; images
``Image/aligned/<stem>_aligned.jpg``. Train and test come from the name prefix; the
validation split is a seeded, stratified ``val_fraction`` of train.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fersuite.card import FaceCrop
from fersuite.data.base import ArraySplit
from fersuite.data.cache import CacheWriter
from fersuite.data.cached import CachedDataModule, stratified_split
from fersuite.data.csvio import read_lines, require_dir
from fersuite.data.errors import BadSamples
from fersuite.data.faces import load_face
from fersuite.errors import DataFormatError

LABEL_FILE = "EmoLabel/list_patition_label.txt"
ALIGNED_DIR = "Image/aligned"
#: The dataset's own order (labels 1..7), in canonical vocabulary names.
RAFDB_CLASSES = ("surprise", "fear", "disgust", "happy", "sad", "anger", "neutral")
FORMAT = (
    f"{LABEL_FILE} with one '<train|test>_<n>.jpg <label>' per line, labels 1..7 (surprise, "
    "fear, disgust, happiness, sadness, anger, neutral)"
)
LAYOUT = f"the RAF-DB basic layout: {FORMAT}, and the images {ALIGNED_DIR}/<stem>_aligned.jpg"


@dataclass(frozen=True)
class RafRow:
    name: str
    split: str
    label: int  # 0-based index into RAFDB_CLASSES
    where: str


def read_rafdb_labels(path: Path, bad: BadSamples) -> list[RafRow]:
    rows: list[RafRow] = []
    seen: set[str] = set()
    for line, text in read_lines(path, FORMAT):
        where = f"{path}:{line}"
        parts = text.split()
        if len(parts) != 2:
            bad(where, f"has {len(parts)} fields; expected '<name>.jpg <label 1..7>'", "malformed")
            continue
        name, label_text = parts
        split = name.split("_", 1)[0]
        if split not in ("train", "test") or "/" in name or "\\" in name:
            bad(where, f"image name {name!r} must start with train_ or test_", "malformed")
            continue
        try:
            label = int(label_text)
        except ValueError:
            bad(where, f"label {label_text!r} is not an integer; expected 1..7", "malformed")
            continue
        if not 1 <= label <= 7:
            bad(where, f"label {label} is out of range; expected 1..7", "malformed")
            continue
        if name in seen:
            bad(where, f"image {name} is listed twice", "duplicate")
            continue
        seen.add(name)
        rows.append(RafRow(name, split, label - 1, where))
    return rows


class RAFDBDataModule(CachedDataModule):
    """RAF-DB basic: 7 classes, aligned RGB faces, no valence/arousal."""

    dataset_name = "rafdb"
    layout = LAYOUT
    has_va = False
    class_names = RAFDB_CLASSES

    @property
    def face_crop(self) -> FaceCrop:
        """The aligned face images, used whole."""
        return FaceCrop(kind="whole", crop_size=self.cache_size)

    @property
    def label_path(self) -> Path:
        return self.root / LABEL_FILE

    def image_path(self, name: str) -> Path:
        stem = name.rsplit(".", 1)[0]
        return self.root / ALIGNED_DIR / f"{stem}_aligned.jpg"

    def source_identities(self) -> list[dict[str, Any]]:
        require_dir(self.root, LAYOUT)
        if not self.label_path.is_file():
            raise DataFormatError(f"{self.label_path}: not found; expected {FORMAT}")
        require_dir(self.root / ALIGNED_DIR, LAYOUT)
        # ~15k images: cheap enough to key the cache on every file's identity.
        paths = [self.label_path]
        images = sorted((self.root / ALIGNED_DIR).glob("*_aligned.jpg"))
        return self._identities(paths + images)

    def cache_params(self) -> dict[str, Any]:
        return {
            "size": self.cache_size,
            "color": self.color,
            "val_fraction": self.val_fraction,
            "split_seed": self.split_seed,
        }

    def fill(
        self, writer: CacheWriter, bad: BadSamples
    ) -> tuple[dict[str, ArraySplit], dict[str, Any]]:
        rows = read_rafdb_labels(self.label_path, bad)
        train_all = [r for r in rows if r.split == "train"]
        labels = np.array([r.label for r in train_all], dtype=np.int64)
        train_idx, val_idx = stratified_split(labels, self.val_fraction, self.split_seed)
        chosen = {
            "train": [train_all[i] for i in train_idx],
            "val": [train_all[i] for i in val_idx],
            "test": [r for r in rows if r.split == "test"],
        }
        splits = {name: self._decode(writer, name, rs, bad) for name, rs in chosen.items()}
        return splits, {"class_names": list(self.class_names)}

    def _decode(
        self, writer: CacheWriter, split: str, rows: list[RafRow], bad: BadSamples
    ) -> ArraySplit:
        name = f"{split}.images"
        if not rows:
            return ArraySplit(np.zeros((0, *self.image_shape()), np.uint8), np.zeros(0, np.int64))
        out = writer.empty(name, (len(rows), *self.image_shape()))

        def decode(r: RafRow) -> np.ndarray:
            return load_face(self.image_path(r.name), self.color, self.cache_size)[0]

        ok = self.decode_all(
            out, rows, decode, lambda r: f"{self.image_path(r.name)} (listed at {r.where})", bad
        )
        if not ok.all():
            out = writer.shrink(name, ok)
            rows = [r for r, k in zip(rows, ok, strict=True) if k]
        return ArraySplit(out, np.array([r.label for r in rows], dtype=np.int64))
