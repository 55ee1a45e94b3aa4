"""A small IoU tracker: a ``face_id`` that stays with a face from frame to frame.

Each frame's boxes are matched greedily to the tracks of the previous frames, highest
intersection-over-union first; a pair counts when its IoU is at least ``iou_threshold``. An
unmatched box starts a new track (a new id, never reused); a track unmatched for more than
``max_missed`` frames is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fersuite.data.faces import Box

__all__ = ["IoUTracker", "iou"]


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when they do not overlap)."""
    w = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
    h = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / (a.w * a.h + b.w * b.h - inter)


@dataclass
class _Track:
    face_id: int
    box: Box
    missed: int = 0


class IoUTracker:
    def __init__(self, iou_threshold: float = 0.3, max_missed: int = 10) -> None:
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold={iou_threshold}; expected in (0, 1]")
        self.iou_threshold = iou_threshold
        self.max_missed = max_missed
        self._tracks: list[_Track] = []
        self._next_id = 0

    def update(self, boxes: Sequence[Box]) -> list[int]:
        """The face ids of one frame's ``boxes`` (in their order)."""
        pairs = sorted(
            (
                (iou(t.box, b), ti, bi)
                for ti, t in enumerate(self._tracks)
                for bi, b in enumerate(boxes)
            ),
            reverse=True,
        )
        ids: list[int | None] = [None] * len(boxes)
        used: set[int] = set()
        for overlap, ti, bi in pairs:
            if overlap < self.iou_threshold:
                break
            if ti in used or ids[bi] is not None:
                continue
            used.add(ti)
            track = self._tracks[ti]
            track.box, track.missed = boxes[bi], 0
            ids[bi] = track.face_id
        for ti, track in enumerate(self._tracks):
            if ti not in used:
                track.missed += 1
        self._tracks = [t for t in self._tracks if t.missed <= self.max_missed]
        for bi, box in enumerate(boxes):
            if ids[bi] is None:
                ids[bi] = self._next_id
                self._tracks.append(_Track(self._next_id, box))
                self._next_id += 1
        return [int(i) for i in ids if i is not None]
