"""Frames of a video file or a camera (OpenCV), subsampled, with one-line errors.

A source is a file OpenCV's FFmpeg backend reads (``.mp4``, ``.avi``, ``.mkv``, ...) or
``camera:N`` (a webcam, V4L2 device ``N``). :class:`VideoReader` yields :class:`Frame` s
(RGB uint8, the index of the frame in the source, its time in seconds) every
``frame_stride``-th frame, further thinned to at most ``max_fps`` frames per second, until
``max_frames`` frames were yielded or ``max_seconds`` of the source have passed.

Unreadable files, unknown codecs, files without a frame and a missing camera raise
:class:`VideoReadError` naming the input. A file that stops before its stated frame count
(truncated, corrupt) keeps the frames read; :attr:`VideoReader.stopped` then says where.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fersuite.errors import PredictError, VideoReadError

__all__ = [
    "VIDEO_SUFFIXES",
    "Frame",
    "FrameSampling",
    "VideoReadError",
    "VideoReader",
    "camera_index",
    "is_video",
]

#: File name endings read as videos (lower case).
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


def camera_index(source: str) -> int | None:
    """``N`` for ``camera:N`` (None for anything else); raises for ``camera:<not a number>``."""
    if not source.startswith("camera:"):
        return None
    tail = source[len("camera:") :]
    if not tail.isdigit():
        raise VideoReadError(f"inputs={source}: expected camera:<device number>, e.g. camera:0")
    return int(tail)


def is_video(path: str | Path) -> bool:
    return str(path).startswith("camera:") or Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class FrameSampling:
    """Which frames are read: every ``frame_stride``-th, at most ``max_fps`` per second of the
    source, at most ``max_frames`` frames and ``max_seconds`` seconds (None: no limit)."""

    frame_stride: int = 1
    max_fps: float | None = None
    max_frames: int | None = None
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        checks: list[tuple[str, Any, bool]] = [
            ("frame_stride", self.frame_stride, False),
            ("max_fps", self.max_fps, True),
            ("max_frames", self.max_frames, True),
            ("max_seconds", self.max_seconds, True),
        ]
        for key, value, optional in checks:
            if value is None and optional:
                continue
            number = isinstance(value, int | float) and not isinstance(value, bool)
            integer = key in ("frame_stride", "max_frames")
            if not number or (integer and not isinstance(value, int)) or not value > 0:
                kind = "an integer >= 1" if integer else "a number > 0"
                raise PredictError(f"{key}={value!r}; expected {kind}" + (" or null" * optional))


@dataclass(frozen=True)
class Frame:
    index: int  # position in the source (0-based)
    time_s: float  # seconds since the first frame
    rgb: np.ndarray  # (H, W, 3) uint8


class VideoReader:
    """Frames of one video file or camera (see the module docstring).

    Attributes after opening: ``fps`` (the source's rate; a camera without one: 30),
    ``frame_count`` (stated by the file; None for a camera), ``size`` (width, height),
    ``out_fps`` (rate of the frames yielded). After iterating: ``read`` (frames decoded),
    ``yielded``, ``stopped`` (a sentence when a file ended before its stated frame count).
    """

    def __init__(self, source: str | Path, sampling: FrameSampling | None = None) -> None:

        self.source = str(source)
        self.sampling = sampling or FrameSampling()
        self.camera = camera_index(self.source)
        if self.camera is None:
            path = Path(self.source)
            if not path.is_file():
                raise VideoReadError(f"inputs: {path} does not exist")
            if path.stat().st_size == 0:
                raise VideoReadError(f"video {path}: empty file (0 bytes)")
            cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
            if not cap.isOpened():
                raise VideoReadError(
                    f"video {path}: OpenCV cannot open it (unknown container or codec, or a "
                    "truncated/corrupt file)"
                )
        else:
            cap = cv2.VideoCapture(self.camera)
            if not cap.isOpened():
                raise VideoReadError(
                    f"inputs=camera:{self.camera}: no camera can be opened at device "
                    f"{self.camera} (none attached, busy, or no permission)"
                )
        self._cap = cap
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if math.isfinite(fps) and fps > 0 else 30.0
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count: int | None = count if self.camera is None and count > 0 else None
        self.size = (
            int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
        s = self.sampling
        self.step = s.frame_stride
        if s.max_fps is not None and self.fps / self.step > s.max_fps:
            self.step = max(self.step, math.ceil(self.fps / s.max_fps - 1e-9))
        self.out_fps = self.fps / self.step
        self.read = 0
        self.yielded = 0
        self.stopped: str | None = None

    def close(self) -> None:
        self._cap.release()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:

        s = self.sampling
        start = time.monotonic()
        index = -1
        limited = False
        try:
            while True:
                if s.max_frames is not None and self.yielded >= s.max_frames:
                    limited = True
                    break
                if not self._cap.grab():
                    break
                index += 1
                self.read += 1
                # a camera's time is the wall clock; a file's its frame rate
                t = time.monotonic() - start if self.camera is not None else index / self.fps
                if s.max_seconds is not None and t > s.max_seconds:
                    limited = True
                    break
                if index % self.step:
                    continue
                ok, bgr = self._cap.retrieve()
                if not ok or bgr is None:
                    break
                self.yielded += 1
                yield Frame(index, float(t), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        finally:
            self.close()
        if self.read == 0 and self.camera is None:
            raise VideoReadError(f"video {self.source}: no frame could be decoded (zero frames)")
        if self.read == 0:
            raise VideoReadError(f"inputs=camera:{self.camera}: the camera gave no frame")
        if self.frame_count is not None and self.read < self.frame_count and not limited:
            self.stopped = (
                f"video {self.source}: stopped at frame {self.read} of {self.frame_count} "
                "(truncated or corrupt file); the frames before it were kept"
            )
