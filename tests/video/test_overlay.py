"""The annotated video's overlay: sized to the frame, every element inside it, bars unclipped."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fersuite.video.annotate import Part, annotate_frame, annotate_frame_parts, class_colors

NAMES = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
SIZES = [(320, 240), (1920, 1080)]
WHERE = ["centre", "top-left", "top", "top-right", "left", "right", "bottom-left", "bottom"]
WHERE += ["bottom-right"]
BG = (1, 2, 3)  # a background no element is drawn in
V_COLOR, A_COLOR = (80, 200, 80), (230, 120, 40)


def _box(where: str, w: int, h: int) -> list[int]:
    s = h // 4
    x = {"left": 0, "right": w - s}.get(where.split("-")[-1], (w - s) // 2)
    y = {"top": 0, "bottom": h - s}.get(where.split("-")[0], (h - s) // 2)
    return [x, y, s, s]


def _row(box: list[int], valence: float = -1.0, arousal: float = 1.0, **kw: Any) -> dict:
    row = {"face_id": 7, "box": box, "expression": "surprise", "confidence": 0.93}
    return row | {"valence": valence, "arousal": arousal} | kw


def _render(w: int, h: int, rows: list[dict]) -> tuple[np.ndarray, np.ndarray, dict[str, Part]]:
    frame = np.empty((h, w, 3), np.uint8)
    frame[:] = BG
    out, parts = annotate_frame_parts(frame, rows, NAMES, smoothed=False)
    assert (frame == BG).all()  # a copy: the input frame is left alone
    return frame, out, {p.name: p for p in parts}


def _inside(rect: tuple[int, int, int, int], w: int, h: int) -> bool:
    x0, y0, x1, y1 = rect
    return 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h


def _overlap(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _ink_height(out: np.ndarray, label: Part) -> int:
    """Rows of the label's patch with text on them (pixels not of the patch's colour)."""
    x0, y0, x1, y1 = label.rect
    patch = out[y0:y1, x0:x1]
    ink = (patch != class_colors(NAMES)["surprise"]).any(axis=2)
    rows = np.flatnonzero(ink.any(axis=1))
    return int(rows[-1] - rows[0] + 1)


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize(("w", "h"), SIZES)
def test_every_element_is_inside_the_frame_and_apart(w: int, h: int, where: str) -> None:
    frame, out, parts = _render(w, h, [_row(_box(where, w, h))])
    assert set(parts) == {"box", "label", "panel", "valence", "arousal"}
    for p in parts.values():
        assert _inside(p.rect, w, h), p
    # the rectangles are truthful: nothing was drawn outside them (text spilling off its patch)
    drawn = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in (p.rect for p in parts.values()):
        drawn[y0:y1, x0:x1] = True
    changed = (out != frame).any(axis=2)
    assert not (changed & ~drawn).any()
    # room around a quarter-height face: label and bars beside the box, apart from each other
    box, label, panel = parts["box"].rect, parts["label"].rect, parts["panel"].rect
    assert not _overlap(label, panel) and not _overlap(label, box) and not _overlap(panel, box)
    for bar in ("valence", "arousal"):
        assert _inside(parts[bar].rect, panel[2], panel[3]) and parts[bar].rect[0] >= panel[0]


@pytest.mark.parametrize("where", ["right", "bottom", "bottom-right", "top-right"])
@pytest.mark.parametrize(("w", "h"), SIZES)
def test_bars_at_both_ends_are_drawn_in_full_at_the_edges(w: int, h: int, where: str) -> None:
    for valence, arousal in ((-1.0, 1.0), (1.0, -1.0)):
        _, out, parts = _render(w, h, [_row(_box(where, w, h), valence, arousal)])
        for name, value, color in (("valence", valence, V_COLOR), ("arousal", arousal, A_COLOR)):
            x0, y0, x1, y1 = parts[name].rect
            assert x1 - x0 >= 0.15 * h  # a readable length, not squeezed by the edge
            mid = x0 + (x1 - x0) // 2
            row = out[(y0 + y1) // 2]
            # the filled half runs from past the zero line to the track's own end pixel
            half = row[x0:mid] if value < 0 else row[mid + 1 : x1]
            assert (half == color).all(), (name, value)
            other = row[mid + 1 : x1] if value < 0 else row[x0:mid]
            assert not (other == color).all(axis=1).any()
            assert (out[y0:y1, x0 if value < 0 else x1 - 1] == color).all()  # full bar height


@pytest.mark.parametrize("where", ["centre", "top-left", "bottom-right"])
def test_text_height_follows_the_frame(where: str) -> None:
    heights = {}
    for w, h in SIZES:
        _, out, parts = _render(w, h, [_row(_box(where, w, h))])
        heights[h] = _ink_height(out, parts["label"])
        assert heights[h] <= 0.06 * h
        assert _inside(parts["label"].rect, w, h)
    assert heights[240] >= 10  # legible at 240p
    assert heights[1080] >= 2.5 * heights[240]


def test_small_faces_get_smaller_text_than_large_faces_within_bounds() -> None:
    w, h = 1920, 1080
    _, out, parts = _render(w, h, [_row([900, 500, 40, 40])])
    small = _ink_height(out, parts["label"])
    _, out, parts = _render(w, h, [_row([600, 300, 500, 500])])
    big = _ink_height(out, parts["label"])
    assert 0.02 * h <= small < big <= 0.06 * h


def test_face_filling_the_frame_keeps_label_and_bars_inside_and_apart() -> None:
    w, h = 320, 240
    for box in ([0, 0, w, h], [-30, -20, w + 60, h + 40], [w - 20, h - 10, 100, 100]):
        _, _, parts = _render(w, h, [_row(box)])
        assert all(_inside(p.rect, w, h) for p in parts.values())
        assert not _overlap(parts["label"].rect, parts["panel"].rect)


def test_long_label_shrinks_to_the_frame_width() -> None:
    w, h = 320, 240
    row = _row(_box("centre", w, h), face_id=123456789012)
    _, _, parts = _render(w, h, [row | {"expression": "surprise"}])
    assert _inside(parts["label"].rect, w, h)


def test_without_valence_only_box_and_label() -> None:
    row = {"face_id": 1, "box": [10, 10, 60, 60], "expression": "happy", "confidence": 0.5}
    frame = np.zeros((240, 320, 3), np.uint8)
    _, parts = annotate_frame_parts(frame, [row], NAMES, smoothed=False)
    assert [p.name for p in parts] == ["box", "label"]


def test_smoothed_values_are_drawn_when_asked() -> None:
    w, h = 320, 240
    row = _row(_box("centre", w, h), 1.0, 1.0)
    row |= {"expression_smooth": "happy", "confidence_smooth": 0.6}
    row |= {"valence_smooth": -1.0, "arousal_smooth": -1.0}
    out, parts = annotate_frame_parts(np.zeros((h, w, 3), np.uint8), [row], NAMES, smoothed=True)
    x0, y0, _, y1 = {p.name: p for p in parts}["valence"].rect
    assert (out[(y0 + y1) // 2, x0] == V_COLOR).all()  # the smoothed -1, not the raw +1
    lx0, ly0 = {p.name: p for p in parts}["label"].rect[:2]
    assert (out[ly0, lx0] == class_colors(NAMES)["happy"]).all()


@pytest.mark.parametrize(("w", "h"), SIZES)
def test_label_is_legible_and_bars_unclipped_by_pixels_alone(w: int, h: int) -> None:
    """Through the drawn pixels only: the label's rows above a face near the bottom-right corner
    are at least 10 px (4 %) of the frame, and both bars (valence -1, arousal +1) are whole:
    the same size and off the frame's edges."""
    frame = np.empty((h, w, 3), np.uint8)
    frame[:] = BG
    s = h // 4
    out = annotate_frame(frame, [_row([w - s, h - s - 2, s, s], -1.0, 1.0)], NAMES, False)
    changed = (out != frame).any(axis=2)
    above = np.flatnonzero(changed[: h - s - 2].any(axis=1))
    assert len(above) >= max(10, 0.03 * h)
    boxes = []
    for color in (V_COLOR, A_COLOR):
        ys, xs = np.nonzero((out == color).all(axis=2))
        assert len(ys)
        boxes.append((xs.min(), ys.min(), xs.max(), ys.max()))
        assert xs.min() > 0 and xs.max() < w - 1 and ys.min() > 0 and ys.max() < h - 1
    (vx0, vy0, vx1, vy1), (ax0, ay0, ax1, ay1) = boxes
    assert (vx1 - vx0, vy1 - vy0) == (ax1 - ax0, ay1 - ay0)
