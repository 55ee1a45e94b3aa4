"""Smoothing filters against hand computations; the IoU tracker; the frame entry point."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fersuite.checkpoint import read_card
from fersuite.data.faces import Box
from fersuite.data.preprocess import frame_input, load_input
from fersuite.errors import PredictError
from fersuite.video.smoothing import Ema, OneEuro, SmoothingSettings
from fersuite.video.tracker import IoUTracker, iou


def test_ema_by_hand() -> None:
    f = Ema(0.25)
    assert f(np.array([4.0]), 0.0)[0] == 4.0  # starts at the first value
    assert f(np.array([0.0]), 0.1)[0] == pytest.approx(3.0)  # 0.25*0 + 0.75*4
    assert f(np.array([8.0]), 0.2)[0] == pytest.approx(0.25 * 8 + 0.75 * 3.0)


def test_one_euro_by_hand() -> None:
    min_cutoff, beta, d_cutoff, dt = 1.0, 0.5, 1.0, 0.1
    f = OneEuro(min_cutoff, beta, d_cutoff)

    def alpha(c: float) -> float:
        return 1 / (1 + 1 / (2 * math.pi * c) / dt)

    assert f(np.array([0.0]), 0.0)[0] == 0.0
    dx = (1.0 - 0.0) / dt
    edx = alpha(d_cutoff) * dx  # previous speed 0
    a = alpha(min_cutoff + beta * abs(edx))
    x1 = a * 1.0
    assert f(np.array([1.0]), dt)[0] == pytest.approx(x1)
    dx2 = (1.0 - x1) / dt
    edx2 = alpha(d_cutoff) * dx2 + (1 - alpha(d_cutoff)) * edx
    a2 = alpha(min_cutoff + beta * abs(edx2))
    assert f(np.array([1.0]), 2 * dt)[0] == pytest.approx(a2 * 1.0 + (1 - a2) * x1)


def test_smoothing_settings_name_the_bad_key() -> None:
    with pytest.raises(PredictError, match="smoothing='median'"):
        SmoothingSettings("median")
    with pytest.raises(PredictError, match="ema_alpha=0"):
        SmoothingSettings("ema", ema_alpha=0)


def test_tracker_keeps_ids_of_moving_faces_and_starts_new_ones() -> None:
    tr = IoUTracker(iou_threshold=0.3)
    a, b = Box(0, 0, 40, 40), Box(100, 0, 40, 40)
    assert tr.update([a, b]) == [0, 1]
    moved = [Box(104, 2, 40, 40), Box(5, 3, 40, 40)]  # both moved a little, order swapped
    assert iou(moved[1], a) > 0.5
    assert tr.update(moved) == [1, 0]
    assert tr.update([Box(200, 100, 40, 40), Box(8, 5, 40, 40)]) == [2, 0]  # a new face
    assert tr.update([]) == []
    assert tr.update([Box(10, 6, 40, 40)]) == [0]  # back after a missed frame


def test_frame_input_is_load_input_of_the_same_pixels(tmp_path: Path) -> None:
    """A video frame goes through the cut and transform of an image file (centre square)."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(60, 90, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "f.png")
    card = read_card(
        {
            "model_cfg": {
                "_target_": "fersuite.models.registry.create_model",
                "arch": "lightweight_cnn",
                "in_chans": 1,
                "input_size": 32,
            },
            "class_names": ["a", "b"],
            "has_va": True,
            "input": {"size": 32, "channels": 1, "mean": [0.5], "std": [0.5]},
        }
    )
    x_file, _ = load_input(card, tmp_path / "f.png")
    assert np.allclose(frame_input(card, rgb).numpy(), x_file.numpy(), atol=1e-6)
    box = Box(10, 5, 30, 30)  # a detector's face
    from fersuite.data.faces import load_face

    class Fixed:
        def detect(self, _: np.ndarray) -> Box:
            return box

    face, _ = load_face(tmp_path / "f.png", "L", 32, detector=Fixed(), margin=0.2)
    crop = card.face_crop.__class__(kind="detector", margin=0.2, detector="yunet")
    from fersuite.data.preprocess import preprocess

    assert np.allclose(
        frame_input(card, rgb, box, crop).numpy(), preprocess(card, face).numpy(), atol=1e-6
    )
