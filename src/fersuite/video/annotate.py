"""Drawing predictions on a video frame: the face box, its label and a valence/arousal bar."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["annotate_frame", "class_colors"]


def class_colors(names: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    """An RGB colour per class (matplotlib's tab10), shared by the video and the trace plot."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {
        n: tuple(int(255 * c) for c in cmap(i % 10)[:3])  # type: ignore[misc]
        for i, n in enumerate(names)
    }


def _bar(img: np.ndarray, x: int, y: int, w: int, value: float, color: Any, label: str) -> None:
    """A horizontal bar for a value in [-1, 1], centred on its zero."""
    import cv2

    h = max(4, w // 12)
    cv2.rectangle(img, (x, y), (x + w, y + h), (60, 60, 60), -1)
    mid = x + w // 2
    end = mid + round(float(np.clip(value, -1, 1)) * w / 2)
    cv2.rectangle(img, (min(mid, end), y), (max(mid, end), y + h), color, -1)
    cv2.line(img, (mid, y), (mid, y + h), (255, 255, 255), 1)
    cv2.putText(img, label, (x + w + 3, y + h), cv2.FONT_HERSHEY_SIMPLEX, h / 12, color, 1)


def annotate_frame(
    rgb: np.ndarray, rows: Sequence[dict[str, Any]], names: Sequence[str], smoothed: bool
) -> np.ndarray:
    """A copy of ``rgb`` with each row's box, ``face_id: expression confidence`` and bars for
    valence (V) and arousal (A) below the box (the smoothed values when there are)."""
    import cv2

    img = np.ascontiguousarray(rgb).copy()
    colors = class_colors(names)
    scale = max(0.35, min(img.shape[:2]) / 600)
    for row in rows:
        x, y, w, h = (int(v) for v in row["box"])
        sfx = "_smooth" if smoothed else ""
        expr, conf = row[f"expression{sfx}"], row[f"confidence{sfx}"]
        color = colors[expr]
        cv2.rectangle(img, (x, y), (x + w - 1, y + h - 1), color, max(1, round(2 * scale)))
        label = f"{row['face_id']}: {expr} {conf:.2f}"
        ty = max(12, y - 4)
        cv2.putText(img, label, (x, ty), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, color, 1)
        if f"valence{sfx}" in row:
            bw = max(20, w // 2)
            by = min(img.shape[0] - 20, y + h + 3)
            _bar(img, x, by, bw, row[f"valence{sfx}"], (80, 200, 80), "V")
            _bar(img, x, by + max(4, bw // 12) + 3, bw, row[f"arousal{sfx}"], (230, 120, 40), "A")
    return img
