"""Expression, valence and arousal of every face in every frame of a video or camera.

:func:`predict_video` reads frames (:mod:`.reader`), finds the faces as the model card says
(a detector per frame; the centre square otherwise, one face with ``face_id`` 0), keeps a
``face_id`` per face (:mod:`.tracker`), turns each face into the model's input with
:func:`fersuite.card.frame_input` (the cut and transform of image files), runs the
:class:`~fersuite.inference.Predictor` on batches of faces across frames and smooths
probabilities and valence/arousal per face (:mod:`.smoothing`). With ``video_out`` every
processed frame is written, annotated (:mod:`.annotate`), at the rate of the frames read.

Ctrl-C (``KeyboardInterrupt``) while reading stops the video there: the frames read so far
are predicted and written, and the result says it was interrupted.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import torch

from fersuite.card import FaceCrop
from fersuite.data.faces import Box, center_crop, detect_faces
from fersuite.data.preprocess import frame_input, input_transform
from fersuite.errors import PredictError
from fersuite.inference import Predictor
from fersuite.video.annotate import annotate_frame
from fersuite.video.reader import Frame, FrameSampling, VideoReader
from fersuite.video.smoothing import FaceSmoother, SmoothingSettings
from fersuite.video.tracker import IoUTracker

__all__ = ["VideoResult", "VideoSettings", "predict_video", "video_columns"]


@dataclass(frozen=True)
class VideoSettings:
    sampling: FrameSampling = field(default_factory=FrameSampling)
    smoothing: SmoothingSettings = field(default_factory=SmoothingSettings)
    batch_size: int = 32
    #: overrides the card's crop (e.g. a detector chosen on the command line)
    face_crop: FaceCrop | None = None
    #: a face detector (fersuite.data.faces); None: the centre square
    detector: Any = None
    iou_threshold: float = 0.3


@dataclass
class VideoResult:
    source: str
    rows: list[dict[str, Any]]
    frames: int  # frames processed
    fps: float  # their rate (the source's / the stride)
    seconds: float  # wall-clock time of reading, detection and inference
    frames_without_face: int = 0
    stopped: str | None = None  # where a truncated file stopped
    interrupted: bool = False  # Ctrl-C
    video_out: Path | None = None

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def video_columns(class_names: Sequence[str], has_va: bool, smoothed: bool) -> list[str]:
    """The columns of the rows of :func:`predict_video`, in order."""
    cols = ["file", "frame", "time_s", "face_id", "box", "expression", "confidence"]
    cols += [f"prob_{c}" for c in class_names] + (["valence", "arousal"] if has_va else [])
    if smoothed:
        cols += ["expression_smooth", "confidence_smooth"]
        cols += [f"prob_{c}_smooth" for c in class_names]
        cols += ["valence_smooth", "arousal_smooth"] if has_va else []
    return cols


@dataclass
class _Pending:
    frame: Frame
    faces: list[tuple[int, Box]]  # (face_id, box)
    inputs: list[torch.Tensor]


class _Writer:
    """The annotated video, written under a temporary name and moved into place on close."""

    FOURCC: ClassVar[dict[str, str]] = {
        ".mp4": "mp4v",
        ".m4v": "mp4v",
        ".mov": "mp4v",
        ".avi": "MJPG",
        ".mkv": "MJPG",
    }

    def __init__(self, path: Path, fps: float) -> None:
        suffix = path.suffix.lower()
        if suffix not in self.FOURCC:
            raise PredictError(f"video_out={path}: expected one of {'/'.join(self.FOURCC)}")
        self.path, self.fps = path, fps
        self.tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
        self._w: Any = None
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:

        if self._w is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h, w = rgb.shape[:2]
            fourcc = cv2.VideoWriter_fourcc(*self.FOURCC[self.path.suffix.lower()])
            self._w = cv2.VideoWriter(str(self.tmp), fourcc, self.fps, (w, h))
            if not self._w.isOpened():
                raise PredictError(f"video_out={self.path}: OpenCV cannot write this video")
        self._w.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self, keep: bool) -> Path | None:
        if self._w is not None:
            self._w.release()
        if keep and self.frames and self.tmp.exists():
            os.replace(self.tmp, self.path)
            return self.path
        self.tmp.unlink(missing_ok=True)
        return None


def predict_video(
    predictor: Predictor,
    source: str | Path,
    settings: VideoSettings | None = None,
    video_out: str | Path | None = None,
    on_frame: Callable[[VideoReader], None] | None = None,
) -> VideoResult:
    """One row per (processed frame, face): see :func:`video_columns`.

    ``on_frame`` is called with the reader after each processed frame (a progress bar)."""
    s = settings or VideoSettings()
    card = predictor.card
    crop = s.face_crop or card.face_crop
    tf = input_transform(card)
    tracker = IoUTracker(s.iou_threshold)
    smoother = FaceSmoother(s.smoothing)
    smoothed = s.smoothing.kind != "none"
    names = predictor.class_names
    reader = VideoReader(source, s.sampling)
    writer = _Writer(Path(video_out), reader.out_fps) if video_out else None
    result = VideoResult(str(source), [], 0, reader.out_fps, 0.0)
    pending: list[_Pending] = []

    def flush() -> None:
        inputs = [x for p in pending for x in p.inputs]
        if inputs:
            with torch.inference_mode():
                out = predictor.run(torch.stack(inputs).float())
            probs = torch.as_tensor(out.expression).float().softmax(dim=1).numpy()
            va = np.stack(
                [
                    torch.as_tensor(out.valence).float().numpy(),
                    torch.as_tensor(out.arousal).float().numpy(),
                ],
                axis=1,
            ).reshape(len(inputs), 2)
        i = 0
        for p in pending:
            frame_rows = []
            for face_id, box in p.faces:
                row = _row(
                    result.source, p.frame, face_id, box, names, probs[i], va[i], predictor.has_va
                )
                if smoothed:
                    sp = smoother((face_id, "probs"), probs[i], p.frame.time_s)
                    k = int(sp.argmax())
                    row["expression_smooth"] = names[k]
                    row["confidence_smooth"] = float(sp[k])
                    row.update(
                        {f"prob_{c}_smooth": float(v) for c, v in zip(names, sp, strict=True)}
                    )
                    if predictor.has_va:
                        sva = smoother((face_id, "va"), va[i], p.frame.time_s)
                        row["valence_smooth"], row["arousal_smooth"] = map(float, sva)
                frame_rows.append(row)
                i += 1
            result.rows += frame_rows
            if writer is not None:
                writer.write(annotate_frame(p.frame.rgb, frame_rows, names, smoothed))
        pending.clear()

    start = time.perf_counter()
    keep = False
    try:
        queued = 0
        try:
            for frame in reader:
                faces = _faces(frame.rgb, s.detector, tracker)
                if not faces:
                    result.frames_without_face += 1
                inputs = [
                    frame_input(card, frame.rgb, b if s.detector else None, crop, tf)
                    for _, b in faces
                ]
                pending.append(_Pending(frame, faces, inputs))
                queued += len(inputs)
                result.frames += 1
                if queued >= s.batch_size:
                    flush()
                    queued = 0
                if on_frame is not None:
                    on_frame(reader)
        except KeyboardInterrupt:
            result.interrupted = True
        flush()
        keep = True
    finally:
        result.seconds = time.perf_counter() - start
        if writer is not None:
            result.video_out = writer.close(keep)
    result.stopped = reader.stopped
    return result


def _faces(rgb: np.ndarray, detector: Any, tracker: IoUTracker) -> list[tuple[int, Box]]:
    if detector is None:
        h, w = rgb.shape[:2]
        left, top, right, bottom = center_crop(w, h)
        return [(0, Box(left, top, right - left, bottom - top))]
    boxes = detect_faces(detector, rgb)
    return list(zip(tracker.update(boxes), boxes, strict=True))


def _row(
    file: str,
    frame: Frame,
    face_id: int,
    box: Box,
    names: Sequence[str],
    probs: np.ndarray,
    va: np.ndarray,
    has_va: bool,
) -> dict[str, Any]:
    k = int(probs.argmax())
    row: dict[str, Any] = {
        "file": file,
        "frame": frame.index,
        "time_s": round(frame.time_s, 6),
        "face_id": face_id,
        "box": [round(box.x), round(box.y), round(box.w), round(box.h)],
        "expression": names[k],
        "confidence": float(probs[k]),
    }
    row.update({f"prob_{c}": float(v) for c, v in zip(names, probs, strict=True)})
    if has_va:
        row["valence"], row["arousal"] = float(va[0]), float(va[1])
    return row
