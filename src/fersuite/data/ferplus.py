"""FER+ relabelling of FER2013: ``fer2013new.csv`` (10 crowd votes per image, 8 emotions).

The file is row-aligned with fer2013.csv: data row *i* of one describes data row *i* of the
other (same ``Usage``). Targets are the majority class (``ferplus_mode=majority``) or the
vote distribution over the 8 emotions (``soft``). Rows without an image name (FER+ removed
the image) are dropped in both modes.

``majority`` follows the FER+ authors' rule (Barsoum et al. 2016; ``_process_data`` of
microsoft/FERPlus): votes of 1 are outliers and set to 0; then the most-voted category wins
only if it holds *more than half* of the remaining votes, where the total counts all ten
categories (``unknown`` and ``NF`` votes included). A row without such a winner is dropped
as ``ferplus_no_majority``; a row whose winner is ``unknown`` or ``NF`` as
``ferplus_unknown_or_nf``.

``soft`` keeps the raw votes: a row is dropped (``ferplus_unknown_or_nf``) when its
most-voted category (ties included) is ``unknown`` or ``NF``; the target is the distribution
of its votes over the 8 emotions. Every drop reason is counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fersuite.data.base import SPLITS
from fersuite.data.csvio import CsvTable, FieldError, parse_int
from fersuite.data.errors import BadSamples
from fersuite.errors import DataFormatError

FERPLUS_VOTE_COLUMNS = (
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
FERPLUS_HEADER = ("Usage", "Image name", *FERPLUS_VOTE_COLUMNS)
#: FER+'s own class order, in canonical vocabulary names.
FERPLUS_CLASSES = ("neutral", "happy", "surprise", "sad", "anger", "disgust", "fear", "contempt")
FERPLUS_MODES = ("majority", "soft")
#: Version of the label rules below, part of the cache key: bump it when they change.
FERPLUS_RULES_VERSION = 2
FORMAT = (
    "FER+ fer2013new.csv with header 'Usage,Image name,neutral,happiness,surprise,sadness,"
    "anger,disgust,fear,contempt,unknown,NF' (non-negative vote counts), row-aligned with "
    "fer2013.csv"
)
_USAGES = {"Training": 0, "PublicTest": 1, "PrivateTest": 2}
_MAX_VOTES = 1000


@dataclass
class FerPlusVotes:
    votes: np.ndarray  # (n_rows, 10) int32; rows that were skipped are all zero
    valid: np.ndarray  # (n_rows,) bool
    has_image: np.ndarray  # (n_rows,) bool


def read_ferplus(
    path: Path, bad: BadSamples, row_split: np.ndarray, fer_path: Path
) -> FerPlusVotes:
    """Read fer2013new.csv and check it against fer2013.csv's per-row split ``row_split``."""
    n = len(row_split)
    table = CsvTable(path, FERPLUS_HEADER, FORMAT, exact=True)
    votes = np.zeros((n, len(FERPLUS_VOTE_COLUMNS)), dtype=np.int32)
    valid = np.zeros(n, dtype=bool)
    has_image = np.zeros(n, dtype=bool)
    for row in table.rows(bad):
        if row.index >= n:
            continue  # reported below as a row-count mismatch
        usage = _USAGES.get(row["Usage"].strip())
        if usage is None:
            bad(row.where, f"Usage={row['Usage']!r}; expected Training, PublicTest or PrivateTest")
            continue
        if row_split[row.index] >= 0 and row_split[row.index] != usage:
            other = SPLITS[int(row_split[row.index])]
            bad(
                row.where,
                f"Usage={row['Usage'].strip()} but data row {row.index + 1} of {fer_path} is in "
                f"the {other} split; the files must be row-aligned",
                "misaligned",
            )
            continue
        try:
            v = [parse_int(row[c], c, 0, _MAX_VOTES) for c in FERPLUS_VOTE_COLUMNS]
        except FieldError as exc:
            bad(row.where, str(exc), "bad votes")
            continue
        if sum(v) == 0:
            bad(row.where, "has no votes; expected vote counts that sum to > 0", "bad votes")
            continue
        votes[row.index] = v
        valid[row.index] = True
        has_image[row.index] = bool(row["Image name"].strip())
    if table.n_rows != n:
        raise DataFormatError(
            f"{path}: has {table.n_rows} data rows but {fer_path} has {n}; "
            "expected FER+'s fer2013new.csv, row-aligned with fer2013.csv"
        )
    return FerPlusVotes(votes=votes, valid=valid, has_image=has_image)


def ferplus_targets(
    data: FerPlusVotes, mode: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(keep mask, majority class, vote distribution over the 8 emotions, drop reasons).

    Every array has one row per data row; ``dropped`` maps each reason to the rows it drops.
    """
    if mode not in FERPLUS_MODES:
        raise DataFormatError(f"data.ferplus_mode={mode!r}; expected one of {FERPLUS_MODES}")
    v = data.votes
    with_image = data.valid & data.has_image
    dropped = {"ferplus_no_image": data.valid & ~data.has_image}
    if mode == "majority":
        counted = np.where(v > 1, v, 0)  # single votes are outliers
        top = counted.max(axis=1)
        winner = counted.argmax(axis=1)
        majority = 2 * top > counted.sum(axis=1)  # strictly more than half (0 votes: none)
        emotion = winner < len(FERPLUS_CLASSES)
        dropped["ferplus_unknown_or_nf"] = with_image & majority & ~emotion
        dropped["ferplus_no_majority"] = with_image & ~majority
        keep = with_image & majority & emotion
        hard = np.where(keep, winner, 0).astype(np.int64)
    else:
        is_top = v == v.max(axis=1, keepdims=True)
        unknown_or_nf = is_top[:, 8] | is_top[:, 9]
        dropped["ferplus_unknown_or_nf"] = with_image & unknown_or_nf
        keep = with_image & ~unknown_or_nf
        hard = v[:, :8].argmax(axis=1).astype(np.int64)
    emo = v[:, :8].astype(np.float64)
    total = emo.sum(axis=1, keepdims=True)
    soft = np.divide(emo, total, out=np.zeros_like(emo), where=total > 0).astype(np.float32)
    return keep, hard, soft, dropped
