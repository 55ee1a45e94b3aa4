"""``data=affectnet``: the official AffectNet release (manually annotated part).

Layout under ``root``: ``Manually_Annotated_file_lists/{training,validation}.csv`` with the
columns ``subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,
expression,valence,arousal`` and the images under ``Manually_Annotated_Images/``.
Expression codes 0..7 = neutral, happy, sad, surprise, fear, disgust, anger, contempt
(the canonical order); 8/9/10 (none, uncertain, no face) are dropped, and contempt too with
``num_classes=7``. Valence/arousal lie in [-1, 1]; -2 marks them invalid (``va_mask``
False: the sample stays for classification and is masked out of VA losses and metrics).
Faces are cropped from the face box widened by ``crop_margin`` and decoded once into the
cache at ``cache_size``. The official validation set is the test split; a seeded, stratified
``val_fraction`` of training is the validation split.

The cache is keyed by the two list files and the image directory (not each of ~290k
images): after editing images in place, run once with ``data.rebuild_cache=true``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from fersuite.card import FaceCrop
from fersuite.data.base import ArraySplit
from fersuite.data.cache import CacheWriter, file_identity
from fersuite.data.cached import CachedDataModule, dir_identity, stratified_split
from fersuite.data.csvio import CsvTable, FieldError, parse_float, parse_int, require_dir
from fersuite.data.errors import BadSamples
from fersuite.data.faces import Box, load_face
from fersuite.errors import DataFormatError
from fersuite.labels import CANONICAL_CLASSES

LISTS_DIR = "Manually_Annotated_file_lists"
IMAGES_DIR = "Manually_Annotated_Images"
COLUMNS = (
    "subDirectory_filePath",
    "face_x",
    "face_y",
    "face_width",
    "face_height",
    "facial_landmarks",
    "expression",
    "valence",
    "arousal",
)
#: Codes 8, 9 and 10, which are dropped.
DROPPED_CODES = {8: "none", 9: "uncertain", 10: "non_face"}
INVALID_VA = -2.0
FORMAT = (
    "AffectNet list CSV with header " + ",".join(COLUMNS) + " (expression 0..10, valence and "
    "arousal in [-1, 1] or -2)"
)
LAYOUT = (
    f"the official AffectNet layout: {LISTS_DIR}/training.csv and validation.csv ({FORMAT}) "
    f"and the images under {IMAGES_DIR}/"
)


@dataclass(frozen=True)
class AffectNetRow:
    path: str
    box: Box
    expression: int
    valence: float
    arousal: float
    where: str


def _parse_row(row: Any) -> AffectNetRow:
    rel = row["subDirectory_filePath"].strip()
    parts = PurePosixPath(rel).parts
    if not rel or rel.startswith("/") or ".." in parts:
        raise FieldError(f"subDirectory_filePath={rel!r}; expected a relative image path")
    x = parse_float(row["face_x"], "face_x", -1e6, 1e6)
    y = parse_float(row["face_y"], "face_y", -1e6, 1e6)
    w = parse_float(row["face_width"], "face_width", 1e-3, 1e6)
    h = parse_float(row["face_height"], "face_height", 1e-3, 1e6)
    expression = parse_int(row["expression"], "expression", 0, 10)
    valence = parse_float(row["valence"], "valence", -1.0, 1.0, allowed=(INVALID_VA,))
    arousal = parse_float(row["arousal"], "arousal", -1.0, 1.0, allowed=(INVALID_VA,))
    return AffectNetRow(rel, Box(x, y, w, h), expression, valence, arousal, row.where)


def read_affectnet_list(path: Path, bad: BadSamples) -> list[AffectNetRow]:
    """The well-formed rows of one AffectNet list file (malformed ones go to ``bad``)."""
    table = CsvTable(path, COLUMNS, FORMAT)
    rows: list[AffectNetRow] = []
    for row in table.rows(bad):
        try:
            rows.append(_parse_row(row))
        except FieldError as exc:
            bad(row.where, str(exc), "malformed row")
    return rows


class AffectNetDataModule(CachedDataModule):
    """AffectNet: 8 (or 7, without contempt) classes with valence/arousal."""

    dataset_name = "affectnet"
    layout = LAYOUT
    has_va = True
    #: Checked by the config schema before any data is read (``data.num_classes``).
    supported_num_classes = (8, 7)

    def __init__(
        self,
        root: str | None = None,
        num_classes: int = 8,
        crop_margin: float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__(root=root, **kwargs)
        if num_classes not in (7, 8):
            raise DataFormatError(
                f"data.num_classes={num_classes}; expected 8, or 7 (contempt dropped)"
            )
        if not 0.0 <= crop_margin <= 1.0:
            raise DataFormatError(f"data.crop_margin={crop_margin}; expected 0..1")
        self.class_names = CANONICAL_CLASSES[:num_classes]
        self.crop_margin = float(crop_margin)

    @property
    def face_crop(self) -> FaceCrop:
        """The listed face box widened by ``crop_margin`` (the centre square without a box)."""
        return FaceCrop(kind="box", margin=self.crop_margin, crop_size=self.cache_size)

    def _list(self, name: str) -> Path:
        return self.root / LISTS_DIR / name

    def source_identities(self) -> list[dict[str, Any]]:
        require_dir(self.root, LAYOUT)
        paths = [self._list("training.csv"), self._list("validation.csv")]
        for p in paths:
            if not p.is_file():
                raise DataFormatError(f"{p}: not found; expected {FORMAT} (in {LAYOUT})")
        images = require_dir(self.root / IMAGES_DIR, LAYOUT)
        return [*(file_identity(p) for p in paths), dir_identity(images)]

    def cache_params(self) -> dict[str, Any]:
        return {
            "num_classes": self.num_classes,
            "crop_margin": self.crop_margin,
            "size": self.cache_size,
            "color": self.color,
            "val_fraction": self.val_fraction,
            "split_seed": self.split_seed,
        }

    def fill(
        self, writer: CacheWriter, bad: BadSamples
    ) -> tuple[dict[str, ArraySplit], dict[str, Any]]:
        dropped: dict[str, int] = {}
        lists = {}
        for split, name in (("train", "training.csv"), ("test", "validation.csv")):
            kept = []
            for r in read_affectnet_list(self._list(name), bad):
                if r.expression in DROPPED_CODES:
                    key = DROPPED_CODES[r.expression]
                    dropped[key] = dropped.get(key, 0) + 1
                elif r.expression >= self.num_classes:
                    dropped["contempt"] = dropped.get("contempt", 0) + 1
                else:
                    kept.append(r)
            lists[split] = kept
        train_all = lists["train"]
        labels = np.array([r.expression for r in train_all], dtype=np.int64)
        train_idx, val_idx = stratified_split(labels, self.val_fraction, self.split_seed)
        chosen = {
            "train": [train_all[i] for i in train_idx],
            "val": [train_all[i] for i in val_idx],
            "test": lists["test"],
        }
        splits = {name: self._decode(writer, name, rows, bad) for name, rows in chosen.items()}
        meta = {"class_names": list(self.class_names), "dropped": dropped}
        return splits, meta

    def _decode(
        self, writer: CacheWriter, split: str, rows: list[AffectNetRow], bad: BadSamples
    ) -> ArraySplit:
        images_root = self.root / IMAGES_DIR
        name = f"{split}.images"
        if not rows:
            return ArraySplit(np.zeros((0, *self.image_shape()), np.uint8), np.zeros(0, np.int64))
        out = writer.empty(name, (len(rows), *self.image_shape()))

        def decode(r: AffectNetRow) -> np.ndarray:
            return load_face(
                images_root / r.path, self.color, self.cache_size, r.box, self.crop_margin
            )[0]

        ok = self.decode_all(
            out, rows, decode, lambda r: f"{images_root / r.path} (listed at {r.where})", bad
        )
        if not ok.all():
            out = writer.shrink(name, ok)
            rows = [r for r, k in zip(rows, ok, strict=True) if k]
        valence = np.array([r.valence for r in rows], dtype=np.float32)
        arousal = np.array([r.arousal for r in rows], dtype=np.float32)
        mask = (valence != INVALID_VA) & (arousal != INVALID_VA)
        return ArraySplit(
            images=out,
            expression=np.array([r.expression for r in rows], dtype=np.int64),
            valence=np.where(mask, valence, 0.0).astype(np.float32),
            arousal=np.where(mask, arousal, 0.0).astype(np.float32),
            va_mask=mask,
        )
