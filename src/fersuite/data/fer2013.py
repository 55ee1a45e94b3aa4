"""``data=fer2013``: the Kaggle ``fer2013.csv`` (and, optionally, FER+ relabelling).

The file: header ``emotion,pixels,Usage``; ``emotion`` 0..6 = angry, disgust, fear, happy,
sad, surprise, neutral; ``pixels`` 2304 space-separated integers (48×48 grayscale, row
major); ``Usage`` Training / PublicTest / PrivateTest → train / val / test.

The 35,887 rows (about 290 MB of text) are parsed in bulk: the file is read once, fields are
located with ``bytes.find``, and the pixel strings of 32 rows at a time are turned into
numbers with a few vectorised numpy passes over their bytes. Any chunk that fails one of the
cheap checks (only digits and spaces, at most 3 digits per number, values ≤ 255, exactly
2304 numbers per row) is re-parsed row by row, which names the bad line and what is wrong.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fersuite.card import FaceCrop
from fersuite.data.base import SPLITS, ArraySplit
from fersuite.data.cache import CacheWriter
from fersuite.data.cached import CachedDataModule
from fersuite.data.csvio import require_dir
from fersuite.data.errors import BadSamples
from fersuite.data.ferplus import (
    FERPLUS_CLASSES,
    FERPLUS_MODES,
    FERPLUS_RULES_VERSION,
    ferplus_targets,
    read_ferplus,
)
from fersuite.errors import DataFormatError

FER2013_FILE = "fer2013.csv"
FER2013_HEADER = ("emotion", "pixels", "Usage")
#: The dataset's own class order (codes 0..6), in canonical vocabulary names.
FER2013_CLASSES = ("anger", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FER2013_USAGES = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
SIDE = 48
N_PIXELS = SIDE * SIDE
FORMAT = (
    "fer2013.csv with header 'emotion,pixels,Usage': emotion 0..6 (angry, disgust, fear, "
    "happy, sad, surprise, neutral), pixels 2304 space-separated integers 0..255 (48×48 "
    "grayscale), Usage Training, PublicTest or PrivateTest"
)

_LABELS = {str(i).encode(): i for i in range(len(FER2013_CLASSES))}
_USAGE_INDEX = {k.encode(): SPLITS.index(v) for k, v in FER2013_USAGES.items()}
_ROWS_PER_CHUNK = 32


@dataclass
class Fer2013Table:
    """The valid rows of a fer2013.csv, in file order."""

    images: np.ndarray  # (n, 48, 48) uint8
    labels: np.ndarray  # (n,) int64, codes 0..6
    split: np.ndarray  # (n,) int8, index into SPLITS
    row: np.ndarray  # (n,) int64, 0-based data-row index in the file
    line: np.ndarray  # (n,) int64, 1-based line number
    row_split: np.ndarray  # (n_rows,) int8 split index of every data row, -1 if unreadable
    n_rows: int


# --------------------------------------------------------------------------------------------
# Pixel strings
# --------------------------------------------------------------------------------------------


def parse_pixel_row(field: bytes, count: int = N_PIXELS) -> np.ndarray:
    """One pixel string → ``count`` uint8 values; :class:`ValueError` says what is wrong."""
    tokens = field.split()
    if len(tokens) != count:
        if b"," in field:
            raise ValueError(
                f"pixels contains ',' (has {field.count(b',') + 3} fields; expected 3)"
            )
        raise ValueError(f"pixels has {len(tokens)} values; expected {count} (48×48 grayscale)")
    for j, tok in enumerate(tokens):
        if not tok.isdigit():
            text = tok[:20].decode("ascii", "replace")
            raise ValueError(f"pixels value #{j + 1} {text!r} is not an integer in 0..255")
        value = int(tok)
        if value > 255:
            raise ValueError(f"pixels value #{j + 1} = {value} is out of range; expected 0..255")
    return np.array([int(t) for t in tokens], dtype=np.uint8)


def _parse_chunk(fields: list[Any], count: int) -> np.ndarray | None:
    """Vectorised parse of a few pixel strings, or None when any check fails."""
    joined = b"  " + b" ".join(fields) + b" "
    b = np.frombuffer(joined, dtype=np.uint8)
    d = b - np.uint8(48)
    dig = d < np.uint8(10)
    if not bool((dig | (b == np.uint8(32))).all()):
        return None  # a byte other than a digit or a space
    four = dig[3:] & dig[2:-1]
    four &= dig[1:-2]
    four &= dig[:-3]
    if bool(four.any()):
        return None  # a number with 4+ digits (leading zeros or out of range)
    dz = d * dig  # digit values, 0 at spaces
    two = np.empty_like(dz)  # value of the last two digits ending at each byte
    two[0] = 0
    np.multiply(dz[:-1], np.uint8(10), out=two[1:])
    two += dz
    hundreds = np.zeros_like(dz)  # the third-last digit, when the previous byte is a digit
    np.multiply(dz[:-2], dig[1:-1], out=hundreds[2:])
    over = hundreds > np.uint8(2)
    over |= (hundreds == np.uint8(2)) & (two > np.uint8(55))
    over &= dig
    if bool(over.any()):
        return None  # a value above 255
    hundreds *= np.uint8(100)  # cannot wrap: every value is <= 255 here
    hundreds += two
    ends = np.flatnonzero(dig[:-1] > dig[1:])  # last digit of every number
    lengths = np.fromiter((len(f) + 1 for f in fields), dtype=np.int64, count=len(fields))
    row_end = 2 + np.cumsum(lengths) - 1
    per_row = np.diff(np.searchsorted(ends, row_end), prepend=0)
    if not bool((per_row == count).all()):
        return None
    return np.take(hundreds, ends).reshape(len(fields), count)


def parse_pixel_fields(
    fields: list[Any], count: int = N_PIXELS
) -> tuple[np.ndarray, dict[int, str]]:
    """Parse pixel strings (bytes or memoryviews) into a (len(fields), count) uint8 array.

    Returns the values and, for every malformed field, its index and what is wrong (its row
    of values is left zero).
    """
    out = np.zeros((len(fields), count), dtype=np.uint8)
    errors: dict[int, str] = {}
    for r0 in range(0, len(fields), _ROWS_PER_CHUNK):
        part = fields[r0 : r0 + _ROWS_PER_CHUNK]
        values = _parse_chunk(part, count)
        if values is not None:
            out[r0 : r0 + len(part)] = values
            continue
        for i, f in enumerate(part, start=r0):
            try:
                out[i] = parse_pixel_row(bytes(f), count)
            except ValueError as exc:
                errors[i] = str(exc)
    return out, errors


# --------------------------------------------------------------------------------------------
# The CSV file
# --------------------------------------------------------------------------------------------


def _label_error(text: bytes) -> str:
    s = text.decode("utf-8", "replace").strip()
    names = "angry, disgust, fear, happy, sad, surprise, neutral"
    try:
        value = int(s)
    except ValueError:
        return f"emotion={s!r} is not an integer; expected 0..6 ({names})"
    return f"emotion={value} is out of range; expected 0..6 ({names})"


def read_fer2013(path: Path, bad: BadSamples) -> Fer2013Table:
    """Parse a fer2013.csv; malformed rows go to ``bad`` in line order."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataFormatError(f"{path}: not found; expected {FORMAT}") from None
    except OSError as exc:
        raise DataFormatError(
            f"{path}: cannot be read ({exc.strerror}); expected {FORMAT}"
        ) from None
    size = len(raw)
    pos = 3 if raw.startswith(b"\xef\xbb\xbf") else 0
    nl = raw.find(b"\n", pos)
    header_end = size if nl < 0 else nl
    header = raw[pos:header_end].rstrip(b"\r").decode("utf-8", "replace")
    if [h.strip() for h in header.split(",")] != list(FER2013_HEADER):
        raise DataFormatError(
            f"{path}:1: header is {header[:80]!r}; expected 'emotion,pixels,Usage' ({FORMAT})"
        )
    pos = header_end + 1
    line = 1
    row = -1
    problems: list[tuple[int, str, str]] = []  # (line, what, reason)
    labels: list[int] = []
    splits: list[int] = []
    rows: list[int] = []
    lines: list[int] = []
    fields: list[Any] = []
    row_split: list[int] = []
    view = memoryview(raw)
    find, rfind = raw.find, raw.rfind
    while pos < size:
        e = find(b"\n", pos)
        if e < 0:
            e = size
        line += 1
        end = e - 1 if e > pos and raw[e - 1] == 13 else e  # strip \r
        start, pos = pos, e + 1
        if end <= start or not raw[start:end].strip():
            continue  # blank line: not a data row
        row += 1
        row_split.append(-1)
        if find(b'"', start, end) >= 0:  # quoted fields: let the csv module split them
            parsed = next(csv.reader([raw[start:end].decode("utf-8", "replace")]))
            if len(parsed) != 3:
                problems.append(
                    (
                        line,
                        f"has {len(parsed)} fields; expected 3 (emotion,pixels,Usage)",
                        "wrong field count",
                    )
                )
                continue
            label_b, pix, usage_b = (p.encode() for p in parsed)
            pixels: Any = pix
        else:
            c1 = find(b",", start, end)
            c2 = rfind(b",", start, end)
            if c1 < 0 or c1 == c2:
                n = 1 if c1 < 0 else 2
                problems.append(
                    (
                        line,
                        f"has {n} fields; expected 3 (emotion,pixels,Usage)",
                        "wrong field count",
                    )
                )
                continue
            label_b, usage_b = raw[start:c1], raw[c2 + 1 : end]
            pixels = view[c1 + 1 : c2]
        label = _LABELS.get(label_b.strip())
        if label is None:
            problems.append((line, _label_error(label_b), "label out of range"))
            continue
        split = _USAGE_INDEX.get(usage_b.strip())
        if split is None:
            commas = raw.count(b",", start, end)
            if commas > 2:
                what = f"has {commas + 1} fields; expected 3 (emotion,pixels,Usage)"
            else:
                text = usage_b.decode("utf-8", "replace").strip()[:40]
                what = f"Usage={text!r}; expected Training, PublicTest or PrivateTest"
            problems.append((line, what, "bad usage"))
            continue
        labels.append(label)
        splits.append(split)
        rows.append(row)
        lines.append(line)
        fields.append(pixels)
    if row < 0:
        raise DataFormatError(f"{path}: has no data rows; expected {FORMAT}")
    values, pixel_errors = parse_pixel_fields(fields)
    for i, what in pixel_errors.items():
        problems.append((lines[i], what, "bad pixels"))
    for ln, what, reason in sorted(problems):
        bad(f"{path}:{ln}", what, reason)
    keep = np.ones(len(fields), dtype=bool)
    keep[list(pixel_errors)] = False
    row_arr = np.asarray(rows, dtype=np.int64)[keep]
    split_arr = np.asarray(splits, dtype=np.int8)[keep]
    rs = np.asarray(row_split, dtype=np.int8)
    rs[row_arr] = split_arr
    return Fer2013Table(
        images=values[keep].reshape(-1, SIDE, SIDE),
        labels=np.asarray(labels, dtype=np.int64)[keep],
        split=split_arr,
        row=row_arr,
        line=np.asarray(lines, dtype=np.int64)[keep],
        row_split=rs,
        n_rows=row + 1,
    )


# --------------------------------------------------------------------------------------------
# DataModule
# --------------------------------------------------------------------------------------------


class FER2013DataModule(CachedDataModule):
    """FER2013 (7 classes, 48×48 grayscale, no valence/arousal), or FER+ labels (8 classes,
    majority or vote-distribution targets) with ``ferplus_labels=<fer2013new.csv>``."""

    dataset_name = "fer2013"
    layout = f"a directory holding {FORMAT}"
    has_va = False

    def __init__(
        self,
        root: str | None = None,
        ferplus_labels: str | None = None,
        ferplus_mode: str = "majority",
        **kwargs: Any,
    ) -> None:
        super().__init__(root=root, **kwargs)
        if ferplus_mode not in FERPLUS_MODES:
            raise DataFormatError(
                f"data.ferplus_mode={ferplus_mode!r}; expected one of {', '.join(FERPLUS_MODES)}"
            )
        self.ferplus_labels = Path(ferplus_labels).expanduser() if ferplus_labels else None
        self.ferplus_mode = ferplus_mode
        self.class_names = FERPLUS_CLASSES if self.ferplus_labels else FER2013_CLASSES

    @property
    def face_crop(self) -> FaceCrop:
        """The whole 48×48 face image."""
        return FaceCrop(kind="whole", crop_size=SIDE)

    @property
    def csv_path(self) -> Path:
        return self.root / FER2013_FILE

    def source_identities(self) -> list[dict[str, Any]]:
        require_dir(self.root, self.layout)
        if not self.csv_path.is_file():
            raise DataFormatError(f"{self.csv_path}: not found; expected {FORMAT}")
        paths = [self.csv_path]
        if self.ferplus_labels is not None:
            if not self.ferplus_labels.is_file():
                raise DataFormatError(
                    f"data.ferplus_labels={self.ferplus_labels}: not found; expected FER+'s "
                    "fer2013new.csv (header Usage,Image name,neutral,...,unknown,NF)"
                )
            paths.append(self.ferplus_labels)
        return self._identities(paths)

    def cache_params(self) -> dict[str, Any]:
        if self.ferplus_labels is None:
            return {"ferplus_mode": None}
        return {"ferplus_mode": self.ferplus_mode, "ferplus_rules": FERPLUS_RULES_VERSION}

    def fill(
        self, writer: CacheWriter, bad: BadSamples
    ) -> tuple[dict[str, ArraySplit], dict[str, Any]]:
        table = read_fer2013(self.csv_path, bad)
        meta: dict[str, Any] = {"class_names": list(self.class_names), "rows": table.n_rows}
        images, split = table.images, table.split
        targets: np.ndarray = table.labels
        if self.ferplus_labels is not None:
            votes = read_ferplus(self.ferplus_labels, bad, table.row_split, self.csv_path)
            keep_rows, hard, soft, dropped = ferplus_targets(votes, self.ferplus_mode)
            keep = keep_rows[table.row]
            images, split = images[keep], split[keep]
            targets = (hard if self.ferplus_mode == "majority" else soft)[table.row[keep]]
            meta["dropped"] = {k: int(np.sum(v[table.row])) for k, v in dropped.items()}
        out = {
            name: ArraySplit(images[split == k], targets[split == k])
            for k, name in enumerate(SPLITS)
        }
        return out, meta
