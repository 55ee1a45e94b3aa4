"""Drawing predictions on a video frame: the face box, its label and valence/arousal bars.

Sizes follow the frame and the face: the label's text is 3-4 % of the frame height (never under
13 px, so it stays legible at 240p), larger for larger faces, and shrinks only to fit the frame's
width. The label sits on a filled patch of its class colour, the bars on a dark panel; both go
above/below the box where they fit and are clamped into the frame, so every element, the bars'
full [-1, 1] range included, is visible wherever the face is."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from matplotlib import colormaps

__all__ = ["Part", "annotate_frame", "annotate_frame_parts", "class_colors"]

_FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX
_MIN_TEXT = 13  # px, the text box height (glyphs of digits/capitals ~ 0.8 of it)
_PANEL = (30, 30, 30)
_TRACK = (90, 90, 90)
_VA_COLORS = {"valence": (80, 200, 80), "arousal": (230, 120, 40)}


def class_colors(names: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    """An RGB colour per class (matplotlib's tab10), shared by the video and the trace plot."""

    cmap = colormaps["tab10"]
    return {
        n: tuple(int(255 * c) for c in cmap(i % 10)[:3])  # type: ignore[misc]
        for i, n in enumerate(names)
    }


@functools.lru_cache(maxsize=8)
def _cached_colors(names: tuple[str, ...]) -> dict[str, tuple[int, int, int]]:
    return class_colors(names)


@dataclass(frozen=True)
class Part:
    """One drawn element of a face: ``box``, ``label``, ``panel`` (the bars' background) or
    ``valence``/``arousal`` (a bar's full track); ``rect`` is ``(x0, y0, x1, y1)``, end-exclusive
    (``img[y0:y1, x0:x1]``), and covers everything drawn for that element."""

    face_id: int
    name: str
    rect: tuple[int, int, int, int]


def _text_size(text: str, scale: float, thick: int) -> tuple[int, int, int]:

    (w, h), base = cv2.getTextSize(text, _FONT, scale, thick)
    return w, h, base


def _font(text_h: float, text: str, max_w: int) -> tuple[float, int]:
    """The font scale and thickness giving a text box ``text_h`` high, narrowed to ``max_w``."""
    _, h1, _ = _text_size("0", 1.0, 1)
    scale = text_h / h1
    thick = max(1, round(text_h / 14))
    w, _, _ = _text_size(text, scale, thick)
    if w > max_w:
        scale *= max_w / w
        thick = max(1, round(scale * h1 / 14))
        while scale > 0.1 and _text_size(text, scale, thick)[0] > max_w:
            scale *= 0.95
    return scale, thick


def _clamp(v: int, lo: int, hi: int) -> int:
    return max(lo, min(v, hi))


def _place(box_y0: int, box_y1: int, heights: list[int], frame_h: int) -> list[int]:
    """Tops for the label and (when there is one) the bar panel: label above and panel below
    the box where they fit, else both below, else both above, else clamped into the frame."""
    above, below = box_y0, frame_h - box_y1
    if len(heights) == 1:
        (lh,) = heights
        if lh <= above:
            return [box_y0 - lh]
        if lh <= below:
            return [box_y1]
        return [_clamp(box_y0, 0, frame_h - lh)]
    lh, ph = heights
    if lh <= above and ph <= below:
        return [box_y0 - lh, box_y1]
    if lh + ph <= below:
        return [box_y1, box_y1 + lh]
    if lh + ph <= above:
        return [box_y0 - lh - ph, box_y0 - ph]
    ly, py = _clamp(box_y0 - lh, 0, frame_h - lh), _clamp(box_y1, 0, frame_h - ph)
    if py < ly + lh <= frame_h - ph:  # overlapping: the panel right under the label
        py = ly + lh
    return [ly, py]


def _draw_face(
    img: np.ndarray,
    face_id: int,
    box: Sequence[float],
    label: str,
    color: tuple[int, int, int],
    va: dict[str, float] | None,
) -> list[Part]:

    fh, fw = img.shape[:2]
    x, y, w, h = (round(float(v)) for v in box)
    bx0, by0 = _clamp(x, 0, fw - 1), _clamp(y, 0, fh - 1)
    bx1, by1 = _clamp(x + w, bx0 + 1, fw), _clamp(y + h, by0 + 1, fh)
    lo, hi = max(_MIN_TEXT, 0.03 * fh), max(_MIN_TEXT, 0.04 * fh)
    text_h = float(np.clip(0.25 * (by1 - by0), lo, hi))
    pad = max(2, round(text_h / 5))
    parts = []

    t = max(1, round(text_h / 10))  # the box's lines, drawn inside it
    for ys, xs in (
        (slice(by0, by0 + t), slice(bx0, bx1)),
        (slice(by1 - t, by1), slice(bx0, bx1)),
        (slice(by0, by1), slice(bx0, bx0 + t)),
        (slice(by0, by1), slice(bx1 - t, bx1)),
    ):
        img[ys, xs] = color
    parts.append(Part(face_id, "box", (bx0, by0, bx1, by1)))

    scale, tthick = _font(text_h, label, fw - 2 * pad)
    tw, th, base = _text_size(label, scale, tthick)
    lw, lh = tw + 2 * pad, th + base + 2 * pad
    heights = [lh]
    if va is not None:
        lscale, lthick = _font(text_h * 0.8, "V", fw)
        letter_w = max(_text_size(k, lscale, lthick)[0] for k in ("V", "A"))
        letter_h = _text_size("V", lscale, lthick)[1]
        bar_h = max(4, round(text_h * 0.5))
        row_h = max(letter_h, bar_h)
        room = fw - letter_w - 3 * pad
        half = (int(np.clip(bx1 - bx0, 4 * text_h, 10 * text_h)) - 1) // 2
        half = max(1, min(half, (room - 1) // 2))
        pw, ph = letter_w + 2 * half + 1 + 3 * pad, 2 * row_h + 3 * pad
        heights.append(ph)
    tops = _place(by0, by1, heights, fh)

    lx, ly = _clamp(bx0, 0, fw - lw), tops[0]
    cv2.rectangle(img, (lx, ly), (lx + lw - 1, ly + lh - 1), color, -1)
    ink = (0, 0, 0) if 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2] > 140 else (255,) * 3
    org = (lx + pad, ly + pad + th)
    cv2.putText(img, label, org, _FONT, scale, ink, tthick, cv2.LINE_AA)
    parts.append(Part(face_id, "label", (lx, ly, lx + lw, ly + lh)))

    if va is not None:
        px, py = _clamp(bx0, 0, fw - pw), tops[1]
        cv2.rectangle(img, (px, py), (px + pw - 1, py + ph - 1), _PANEL, -1)
        parts.append(Part(face_id, "panel", (px, py, px + pw, py + ph)))
        for i, (key, letter) in enumerate((("valence", "V"), ("arousal", "A"))):
            ry = py + pad + i * (row_h + pad)
            vc = _VA_COLORS[key]
            org = (px + pad, ry + (row_h + letter_h) // 2)
            cv2.putText(img, letter, org, _FONT, lscale, (255,) * 3, lthick, cv2.LINE_AA)
            x0 = px + 2 * pad + letter_w
            y0 = ry + (row_h - bar_h) // 2
            mid, y1 = x0 + half, y0 + bar_h - 1
            cv2.rectangle(img, (x0, y0), (x0 + 2 * half, y1), _TRACK, -1)
            end = mid + round(float(np.clip(va[key], -1, 1)) * half)
            cv2.rectangle(img, (min(mid, end), y0), (max(mid, end), y1), vc, -1)
            cv2.line(img, (mid, y0), (mid, y1), (255, 255, 255), 1)
            parts.append(Part(face_id, key, (x0, y0, x0 + 2 * half + 1, y1 + 1)))
    return parts


def annotate_frame_parts(
    rgb: np.ndarray, rows: Sequence[dict[str, Any]], names: Sequence[str], smoothed: bool
) -> tuple[np.ndarray, list[Part]]:
    """:func:`annotate_frame` and the rectangles of what it drew (all inside the frame)."""
    img = np.ascontiguousarray(rgb).copy()
    colors = _cached_colors(tuple(names))
    sfx = "_smooth" if smoothed else ""
    parts: list[Part] = []
    for row in rows:
        expr, conf = row[f"expression{sfx}"], row[f"confidence{sfx}"]
        va = None
        if f"valence{sfx}" in row:
            va = {k: float(row[f"{k}{sfx}"]) for k in ("valence", "arousal")}
        label = f"{row['face_id']}: {expr} {conf:.2f}"
        parts += _draw_face(img, int(row["face_id"]), row["box"], label, colors[expr], va)
    return img, parts


def annotate_frame(
    rgb: np.ndarray, rows: Sequence[dict[str, Any]], names: Sequence[str], smoothed: bool
) -> np.ndarray:
    """A copy of ``rgb`` with each row's box, ``face_id: expression confidence`` and bars for
    valence (V) and arousal (A) (the smoothed values when there are), sized to the frame and
    the face and kept inside the frame."""
    return annotate_frame_parts(rgb, rows, names, smoothed)[0]
