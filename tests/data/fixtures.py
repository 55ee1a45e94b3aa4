"""Tiny datasets written in the public on-disk formats (real JPEG/PNG files via PIL).

Each ``write_*`` function writes exactly what the public release looks like (file names,
headers, label codes) and returns a :class:`Written` record of every sample: its source
split, its label code, the canonical class name the loader must report (None when the loader
must drop it), its line in the list file, and what its image looks like, so tests can check
round trips: what the fixture wrote is what the loader returns.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

FER2013_NAMES = ("anger", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FER2013_USAGE = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
FERPLUS_COLUMNS = (
    "neutral",
    "happiness",
    "surprise",
    "sadness",
    "anger",
    "disgust",
    "fear",
    "contempt",
    "unknown",
    "NF",
)
FERPLUS_NAMES = ("neutral", "happy", "surprise", "sad", "anger", "disgust", "fear", "contempt")
AFFECTNET_NAMES = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")
RAFDB_NAMES = ("surprise", "fear", "disgust", "happy", "sad", "anger", "neutral")

#: A distinct fill colour per class index (RGB), far from the fixtures' backgrounds.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 40, 40),
    (40, 200, 40),
    (50, 60, 230),
    (230, 220, 40),
    (220, 40, 220),
    (40, 220, 220),
    (240, 150, 30),
    (140, 90, 240),
)


@dataclass
class Sample:
    """One sample as written. ``name`` is None when the loader must drop the sample."""

    split: str
    label: int | None
    name: str | None
    line: int | None = None
    path: str | None = None
    valence: float | None = None
    arousal: float | None = None
    box: tuple[int, int, int, int] | None = None
    color: tuple[int, int, int] | None = None
    size: tuple[int, int] | None = None
    pixels: np.ndarray | None = None
    votes: tuple[int, ...] | None = None
    soft: tuple[float, ...] | None = None


@dataclass
class Written:
    root: Path
    files: list[Path] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)

    def split(self, split: str, kept_only: bool = True) -> list[Sample]:
        return [
            s for s in self.samples if s.split == split and (s.name is not None or not kept_only)
        ]


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _color(label: int, rng: np.random.Generator) -> tuple[int, int, int]:
    base = np.array(PALETTE[label % len(PALETTE)])
    jitter = rng.integers(-12, 13, size=3)
    r, g, b = (int(v) for v in np.clip(base + jitter, 0, 255))
    return r, g, b


def _save(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        img.save(path, format="JPEG", quality=95, subsampling=0)
    else:
        img.save(path, format="PNG")


# --------------------------------------------------------------------------------------------
# FER2013 / FER+
# --------------------------------------------------------------------------------------------


def fer_pixels(label: int, rng: np.random.Generator) -> np.ndarray:
    """A 48×48 uint8 face stand-in whose mean brightness depends on the class."""
    base = 40 + 28 * label
    img = base + rng.integers(-20, 21, size=(48, 48))
    img[16:32, 8:40] = 255 - base  # a band that also depends on the class
    return np.clip(img, 0, 255).astype(np.uint8)


def write_fer2013(
    root: str | Path,
    n_per_split: int | Mapping[str, int] = 7,
    seed: int = 0,
    train_labels: Sequence[int] | None = None,
    shuffle: bool = True,
    crlf: bool = False,
) -> Written:
    """``root/fer2013.csv`` (header ``emotion,pixels,Usage``), rows of the three usages
    interleaved (when ``shuffle``); labels cycle over 0..6 unless ``train_labels`` is given."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = _rng(seed)
    counts = (
        dict(n_per_split)
        if isinstance(n_per_split, Mapping)
        else dict.fromkeys(FER2013_USAGE, n_per_split)
    )
    rows: list[Sample] = []
    for split, usage_n in counts.items():
        labels = (
            list(train_labels)
            if split == "train" and train_labels is not None
            else [i % 7 for i in range(usage_n)]
        )
        for label in labels:
            rows.append(Sample(split=split, label=label, name=FER2013_NAMES[label], pixels=None))
    order = rng.permutation(len(rows)) if shuffle else np.arange(len(rows))
    rows = [rows[i] for i in order]
    nl = "\r\n" if crlf else "\n"
    lines = ["emotion,pixels,Usage"]
    for i, s in enumerate(rows):
        assert s.label is not None
        s.pixels = fer_pixels(s.label, rng)
        s.line = i + 2
        pix = " ".join(str(int(v)) for v in s.pixels.ravel())
        lines.append(f"{s.label},{pix},{FER2013_USAGE[s.split]}")
    path = root / "fer2013.csv"
    path.write_bytes((nl.join(lines) + nl).encode())
    return Written(root=root, files=[path], samples=rows)


#: Vote patterns over FERPLUS_COLUMNS cycled by write_ferplus; {k} is the row's class.
_FERPLUS_KINDS = (
    "clear",
    "outlier",
    "split",
    "unknown",
    "nf",
    "tie",
    "noimage",
    "clear",
    "unknown_share",
)
#: Kinds each mode keeps (FER+ authors' majority rule: single votes dropped, then > half).
_FERPLUS_MAJORITY_KEEPS = ("clear", "outlier")
_FERPLUS_SOFT_KEEPS = ("clear", "outlier", "split", "tie", "unknown_share")


def _ferplus_votes(kind: str, k: int, rng: np.random.Generator) -> list[int]:
    v = [0] * 10
    other = int((k + 1 + rng.integers(0, 6)) % 8)
    third = (other + 1) % 8 if (other + 1) % 8 != k else (other + 2) % 8
    if kind == "clear":
        v[k], v[other] = 7, 3
    elif kind == "outlier":  # exactly half of all votes, but more than half without the single
        v[k], v[other], v[third] = 5, 4, 1
    elif kind == "split":  # plurality without an absolute majority
        v[k], v[other], v[third] = 4, 3, 3
    elif kind == "unknown":
        v[8], v[k] = 6, 4
    elif kind == "nf":
        v[9], v[k] = 9, 1
    elif kind == "tie":
        v[k], v[other] = 5, 5
    elif kind == "noimage":
        v[k] = 10
    elif kind == "unknown_share":  # half the votes: unknown and NF votes count in the total
        v[k], v[8], v[9] = 5, 3, 2
    return v


def write_ferplus(root: str | Path, fer: Written, seed: int = 0) -> Written:
    """``root/fer2013new.csv`` row-aligned with the fer2013.csv fixture ``fer``.

    Rows cycle over vote patterns: a clear majority, a majority only once the single vote is
    dropped, a plurality, an unknown majority, an NF majority, a two-class tie, a row without
    an image name and a half share next to unknown/NF votes. Each returned sample carries
    its votes, the expected majority class name (None when majority mode drops it) and the
    expected soft target (None when soft mode drops it).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = _rng(seed)
    header = "Usage,Image name," + ",".join(FERPLUS_COLUMNS)
    lines = [header]
    out: list[Sample] = []
    for i, src in enumerate(fer.samples):
        kind = _FERPLUS_KINDS[i % len(_FERPLUS_KINDS)]
        k = i % 8
        votes = _ferplus_votes(kind, k, rng)
        name = "" if kind == "noimage" else f"fer{i:07d}.png"
        lines.append(f"{FER2013_USAGE[src.split]},{name}," + ",".join(map(str, votes)))
        keep_soft = kind in _FERPLUS_SOFT_KEEPS
        keep_major = kind in _FERPLUS_MAJORITY_KEEPS
        emo = np.array(votes[:8], dtype=np.float64)
        soft = tuple(float(x) for x in emo / emo.sum()) if keep_soft else None
        out.append(
            Sample(
                split=src.split,
                label=k if keep_major else None,
                name=FERPLUS_NAMES[k] if keep_major else None,
                line=i + 2,
                pixels=src.pixels,
                votes=tuple(votes),
                soft=soft,
            )
        )
    path = root / "fer2013new.csv"
    path.write_text("\n".join(lines) + "\n")
    return Written(root=root, files=[path], samples=out)


# --------------------------------------------------------------------------------------------
# AffectNet
# --------------------------------------------------------------------------------------------

AFFECTNET_HEADER = (
    "subDirectory_filePath,face_x,face_y,face_width,face_height,"
    "facial_landmarks,expression,valence,arousal"
)


def _affectnet_rows(
    n: int,
    split: str,
    rng: np.random.Generator,
    with_invalid_va: bool,
    with_dropped: bool,
    start: int,
) -> list[Sample]:
    codes = [i % 8 for i in range(n)]
    if with_dropped:
        codes += [8, 9, 10]
    order = rng.permutation(len(codes))
    rows = []
    for j, idx in enumerate(order):
        code = codes[idx]
        w_img, h_img = int(rng.integers(72, 129)), int(rng.integers(72, 129))
        side = int(rng.integers(28, min(w_img, h_img) - 16))
        x = int(rng.integers(8, w_img - side - 7))
        y = int(rng.integers(8, h_img - side - 7))
        if code >= 8:
            va: tuple[float, float] = (-2.0, -2.0)
        elif with_invalid_va and j % 4 == 3:
            va = (-2.0, -2.0)
        else:
            va = (round(float(rng.uniform(-1, 1)), 6), round(float(rng.uniform(-1, 1)), 6))
        digest = hashlib.sha1(f"{split}{start + j}".encode()).hexdigest()[:24]
        ext = "png" if (start + j) % 7 == 6 else "jpg"
        rows.append(
            Sample(
                split=split,
                label=code,
                name=AFFECTNET_NAMES[code] if code < 8 else None,
                path=f"{(start + j) % 3 + 1}/{digest}.{ext}",
                valence=va[0],
                arousal=va[1],
                box=(x, y, side, side),
                color=_color(code, rng),
                size=(w_img, h_img),
            )
        )
    return rows


def affectnet_image(s: Sample, rng: np.random.Generator | None = None) -> Image.Image:
    """The image of one AffectNet fixture sample: a flat background, the face box filled."""
    assert s.size is not None and s.box is not None and s.color is not None
    img = Image.new("RGB", s.size, (90, 90, 90))
    x, y, w, h = s.box
    img.paste(s.color, (x, y, x + w, y + h))
    return img


def write_affectnet(
    root: str | Path,
    n: int = 24,
    n_test: int | None = None,
    with_invalid_va: bool = True,
    with_dropped: bool = True,
    seed: int = 0,
) -> Written:
    """The official AffectNet layout under ``root``.

    ``Manually_Annotated_file_lists/training.csv`` gets ``n`` rows (codes cycling over 0..7)
    and ``validation.csv`` ``n_test`` rows (default ``max(8, n // 2)``), plus, with
    ``with_dropped``, one row each of codes 8/9/10 (none/uncertain/no-face, VA -2) that the
    loader must drop. With ``with_invalid_va`` every 4th row has valence = arousal = -2.
    Images go to ``Manually_Annotated_Images/<subdir>/<hash>.jpg`` (every 7th a PNG): a grey
    background with the face box filled with a class colour (``Sample.color``), so crops can
    be checked. Samples of training.csv have split "train", of validation.csv split "test".
    """
    root = Path(root)
    rng = _rng(seed)
    n_test = max(8, n // 2) if n_test is None else n_test
    lists = root / "Manually_Annotated_file_lists"
    images = root / "Manually_Annotated_Images"
    lists.mkdir(parents=True, exist_ok=True)
    written = Written(root=root)
    for fname, split, count, start in (
        ("training.csv", "train", n, 0),
        ("validation.csv", "test", n_test, 10_000),
    ):
        rows = _affectnet_rows(count, split, rng, with_invalid_va, with_dropped, start)
        lines = [AFFECTNET_HEADER]
        for i, s in enumerate(rows):
            assert s.box is not None and s.path is not None
            s.line = i + 2
            x, y, w, h = s.box
            pts = rng.uniform(0, 1, size=(68, 2)) * [w, h] + [x, y]
            landmarks = ";".join(f"{v:.2f}" for v in pts.ravel())
            lines.append(
                f"{s.path},{x},{y},{w},{h},{landmarks},{s.label},{s.valence:g},{s.arousal:g}"
            )
            img_path = images / s.path
            _save(affectnet_image(s), img_path)
            written.files.append(img_path)
        path = lists / fname
        path.write_text("\n".join(lines) + "\n")
        written.files.append(path)
        written.samples += rows
    return written


# --------------------------------------------------------------------------------------------
# RAF-DB (basic)
# --------------------------------------------------------------------------------------------


def write_rafdb(
    root: str | Path, n_train: int = 14, n_test: int = 7, seed: int = 0, size: int = 100
) -> Written:
    """``EmoLabel/list_patition_label.txt`` (``train_00001.jpg 5``; labels 1..7) and the
    aligned images ``Image/aligned/<stem>_aligned.jpg`` (``size``×``size`` RGB, filled with
    the class colour plus mild noise)."""
    root = Path(root)
    rng = _rng(seed)
    written = Written(root=root)
    lines = []
    entries = [("train", i) for i in range(n_train)] + [("test", i) for i in range(n_test)]
    for line, (split, i) in enumerate(entries, start=1):
        label = i % 7 + 1
        fname = f"{split}_{i + 1:05d}.jpg"
        color = _color(label - 1, rng)
        arr = np.clip(
            np.array(color)[None, None, :] + rng.integers(-6, 7, size=(size, size, 3)), 0, 255
        ).astype(np.uint8)
        rel = f"Image/aligned/{fname[:-4]}_aligned.jpg"
        _save(Image.fromarray(arr, "RGB"), root / rel)
        written.files.append(root / rel)
        lines.append(f"{fname} {label}")
        written.samples.append(
            Sample(
                split=split,
                label=label,
                name=RAFDB_NAMES[label - 1],
                line=line,
                path=rel,
                color=color,
                size=(size, size),
            )
        )
    path = root / "EmoLabel" / "list_patition_label.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    written.files.append(path)
    return written


# --------------------------------------------------------------------------------------------
# Image folders
# --------------------------------------------------------------------------------------------


def write_folder(
    root: str | Path,
    counts: Mapping[str, int] | None = None,
    classes: Sequence[str] = ("happiness", "sad", "neutral", "Anger"),
    with_va: bool = True,
    seed: int = 0,
    size: tuple[int, int] = (40, 32),
) -> Written:
    """``root/<split>/<class>/<n>.{jpg,png}`` (alternating), ``size`` = (width, height); the
    centre square of each image holds the class colour, the margins a grey band. With
    ``with_va`` a ``va.csv`` (``path,valence,arousal``, paths relative to root) covers every
    image except every third one. Class folder names may be aliases (``happiness``)."""
    from fersuite.labels import canonical_name

    root = Path(root)
    rng = _rng(seed)
    counts = dict(counts or {"train": 12, "test": 6})
    written = Written(root=root)
    va_lines = ["path,valence,arousal"]
    w, h = size
    side = min(w, h)
    x0, y0 = (w - side) // 2, (h - side) // 2
    k = 0
    for split, n in counts.items():
        for i in range(n):
            c = i % len(classes)
            color = _color(c, rng)
            img = Image.new("RGB", (w, h), (128, 128, 128))
            img.paste(color, (x0, y0, x0 + side, y0 + side))
            rel = f"{split}/{classes[c]}/{i:03d}.{'png' if k % 2 else 'jpg'}"
            _save(img, root / rel)
            written.files.append(root / rel)
            s = Sample(
                split=split,
                label=c,
                name=canonical_name(classes[c]),
                path=rel,
                color=color,
                size=(w, h),
            )
            if with_va and k % 3 != 2:
                s.valence = round(float(rng.uniform(-1, 1)), 4)
                s.arousal = round(float(rng.uniform(-1, 1)), 4)
                va_lines.append(f"{rel},{s.valence},{s.arousal}")
            written.samples.append(s)
            k += 1
    if with_va:
        path = root / "va.csv"
        path.write_text("\n".join(va_lines) + "\n")
        written.files.append(path)
    return written
