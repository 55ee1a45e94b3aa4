"""Face boxes: square crops with a margin, centre crops, and optional OpenCV face detection.

``opencv-python-headless`` 5.0 ships neither ``cv2.CascadeClassifier`` nor any cascade or
DNN model file, so detection needs a model file supplied by the user
(``data.face_detector_model``): YuNet (``cv2.FaceDetectorYN``, an ``.onnx`` file) with
``face_detector=yunet``, or, on OpenCV builds that still have it, a Haar cascade ``.xml``
with ``face_detector=haar``. Images where no face is found fall back to a centre crop and
are counted.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from fersuite.config import ConfigError
from fersuite.data.images import ColorMode, ImageReadError, crop_resize, open_image, to_mode

FACE_DETECTORS = ("none", "yunet", "haar")

#: Longest image side fed to a detector; larger images are scaled down for detection.
_DETECT_MAX_SIDE = 640


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixels: top-left corner, width and height."""

    x: float
    y: float
    w: float
    h: float

    def scaled(self, sx: float, sy: float) -> Box:
        return Box(self.x * sx, self.y * sy, self.w * sx, self.h * sy)


def square_crop(box: Box, margin: float) -> tuple[float, float, float, float]:
    """A square (left, top, right, bottom) around ``box``'s centre whose side is the box's
    longer side plus ``margin`` times that side on each edge."""
    side = max(box.w, box.h) * (1.0 + 2.0 * margin)
    cx, cy = box.x + box.w / 2.0, box.y + box.h / 2.0
    return (cx - side / 2.0, cy - side / 2.0, cx + side / 2.0, cy + side / 2.0)


def center_crop(width: int, height: int) -> tuple[float, float, float, float]:
    """The largest centred square of a ``width``×``height`` image."""
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return (left, top, left + side, top + side)


class FaceDetector(Protocol):
    def detect(self, rgb: np.ndarray) -> Box | None:
        """The most prominent face of an (H, W, 3) uint8 RGB image, or None."""
        ...


def _downscale(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    import cv2

    h, w = rgb.shape[:2]
    scale = min(1.0, _DETECT_MAX_SIDE / max(h, w))
    if scale < 1.0:
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))))
    return rgb, scale


class YuNetDetector:
    """``cv2.FaceDetectorYN`` with a user-supplied YuNet ``.onnx`` model; one instance per
    thread (OpenCV detectors are not thread-safe)."""

    def __init__(self, model: Path, score_threshold: float = 0.6) -> None:
        import cv2

        if not hasattr(cv2, "FaceDetectorYN"):
            raise ConfigError("data.face_detector=yunet needs cv2.FaceDetectorYN (OpenCV >= 4.5.4)")
        self.model = str(model)
        self.score_threshold = score_threshold
        self._local = threading.local()
        self._cv2 = cv2
        self._get()  # fail now on an unreadable model

    def _get(self) -> object:
        det = getattr(self._local, "det", None)
        if det is None:
            try:
                det = self._cv2.FaceDetectorYN.create(
                    self.model, "", (320, 320), self.score_threshold, 0.3, 50
                )
            except self._cv2.error as exc:
                raise ConfigError(
                    f"data.face_detector_model={self.model}: not a YuNet .onnx model "
                    f"OpenCV can load ({str(exc).strip().splitlines()[-1]})"
                ) from None
            self._local.det = det
        return det

    def detect(self, rgb: np.ndarray) -> Box | None:
        small, scale = _downscale(rgb)
        h, w = small.shape[:2]
        det = self._get()
        det.setInputSize((w, h))  # type: ignore[attr-defined]
        bgr = np.ascontiguousarray(small[:, :, ::-1])
        _, faces = det.detect(bgr)  # type: ignore[attr-defined]
        if faces is None or len(faces) == 0:
            return None
        best = max(faces, key=lambda f: float(f[2] * f[3]))
        x, y, bw, bh = (float(v) / scale for v in best[:4])
        return Box(x, y, bw, bh) if bw > 0 and bh > 0 else None

    def detect_all(self, rgb: np.ndarray) -> list[Box]:
        """Every face found (video frames: several faces are tracked), largest first."""
        small, scale = _downscale(rgb)
        h, w = small.shape[:2]
        det = self._get()
        det.setInputSize((w, h))  # type: ignore[attr-defined]
        _, faces = det.detect(np.ascontiguousarray(small[:, :, ::-1]))  # type: ignore[attr-defined]
        boxes = [
            Box(*(float(v) / scale for v in f[:4])) for f in (faces if faces is not None else [])
        ]
        return sorted((b for b in boxes if b.w > 0 and b.h > 0), key=lambda b: -b.w * b.h)


class HaarDetector:
    """``cv2.CascadeClassifier`` (absent from opencv-python-headless 5.0)."""

    def __init__(self, model: Path | None) -> None:
        import cv2

        if not hasattr(cv2, "CascadeClassifier"):
            raise ConfigError(
                f"data.face_detector=haar needs cv2.CascadeClassifier, which OpenCV "
                f"{cv2.__version__} does not provide; use data.face_detector=yunet with "
                "data.face_detector_model=<face_detection_yunet .onnx file>"
            )
        if model is None:
            bundled = getattr(getattr(cv2, "data", None), "haarcascades", "")
            model = Path(bundled) / "haarcascade_frontalface_default.xml"
        if not model.is_file():
            raise ConfigError(
                f"data.face_detector_model={model}: cascade file not found; expected an "
                "OpenCV Haar cascade .xml (e.g. haarcascade_frontalface_default.xml)"
            )
        self.model = str(model)
        self._local = threading.local()
        self._cv2 = cv2

    def detect(self, rgb: np.ndarray) -> Box | None:
        det = getattr(self._local, "det", None)
        if det is None:
            det = self._cv2.CascadeClassifier(self.model)
            self._local.det = det
        small, scale = _downscale(rgb)
        gray = self._cv2.cvtColor(small, self._cv2.COLOR_RGB2GRAY)
        side = max(20, min(gray.shape) // 8)
        faces = det.detectMultiScale(gray, 1.1, 5, minSize=(side, side))
        if len(faces) == 0:
            return None
        x, y, w, h = max(faces, key=lambda f: int(f[2]) * int(f[3]))
        return Box(x / scale, y / scale, w / scale, h / scale)


def make_detector(
    name: str, model: str | None = None, score_threshold: float = 0.6
) -> FaceDetector | None:
    """The detector named by ``data.face_detector`` (None for ``none``)."""
    if name not in FACE_DETECTORS:
        raise ConfigError(f"data.face_detector={name!r}; expected one of {FACE_DETECTORS}")
    if name == "none":
        return None
    path = Path(model).expanduser() if model else None
    if name == "haar":
        return HaarDetector(path)
    if path is None or not path.is_file():
        shown = "null" if path is None else str(path)
        raise ConfigError(
            f"data.face_detector_model={shown}: a YuNet .onnx model file is required for "
            "data.face_detector=yunet (OpenCV ships none; e.g. face_detection_yunet_2023mar.onnx)"
        )
    if not 0.0 < score_threshold < 1.0 or math.isnan(score_threshold):
        raise ConfigError(f"data.face_score_threshold={score_threshold}; expected in (0, 1)")
    return YuNetDetector(path, score_threshold)


def detect_faces(detector: FaceDetector, rgb: np.ndarray) -> list[Box]:
    """Every face ``detector`` finds in an (H, W, 3) uint8 RGB image, largest first (its
    ``detect_all`` when it has one, else its single most prominent face)."""
    detect_all = getattr(detector, "detect_all", None)
    if detect_all is not None:
        return list(detect_all(rgb))
    found = detector.detect(rgb)
    return [found] if found is not None else []


def cut_face(
    img: Image.Image, mode: ColorMode, size: int, box: Box | None = None, margin: float = 0.0
) -> np.ndarray:
    """The square around ``box`` widened by ``margin`` (the centre square without a box) of a
    decoded image, converted to ``mode`` and resized to ``size``×``size`` uint8."""
    img = to_mode(img, mode)
    crop = square_crop(box, margin) if box is not None else center_crop(img.width, img.height)
    return crop_resize(img, crop, size)


def load_face(
    path: Path,
    mode: ColorMode,
    size: int,
    box: Box | None = None,
    margin: float = 0.0,
    detector: FaceDetector | None = None,
    exif_transpose: bool = False,
) -> tuple[np.ndarray, bool]:
    """Decode ``path`` and return its face as a ``size``×``size`` uint8 array.

    The face is the square around ``box`` (stored-image pixels) widened by ``margin``; else
    the face ``detector`` finds; else the centre square. The flag is False when a detector
    found no face (the centre square was used).
    """
    if box is not None:
        crop = square_crop(box, margin)
        img, (w, h) = open_image(path, mode, min_scale=size / (crop[2] - crop[0]))
        left, top, right, bottom = crop
        if right <= 0 or bottom <= 0 or left >= w or top >= h:
            raise ImageReadError(
                f"face box x={box.x:g} y={box.y:g} w={box.w:g} h={box.h:g} lies outside "
                f"the {w}×{h} image"
            )
        sx, sy = img.width / w, img.height / h
        return crop_resize(img, (left * sx, top * sy, right * sx, bottom * sy), size), True
    if detector is not None:
        rgb, _ = open_image(path, "RGB", exif_transpose=exif_transpose)
        found = detector.detect(np.asarray(rgb))
        return cut_face(rgb, mode, size, found, margin), found is not None
    img, _ = open_image(
        path, mode, min_scale=lambda wh: size / min(wh), exif_transpose=exif_transpose
    )
    return crop_resize(img, center_crop(img.width, img.height), size), True
