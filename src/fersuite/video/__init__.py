"""Prediction on videos and cameras: frames (:mod:`.reader`), face ids (:mod:`.tracker`),
temporal smoothing (:mod:`.smoothing`), batched inference (:mod:`.run`), the trace plot
(:mod:`.trace`) and the annotated video (:mod:`.annotate`)."""

from fersuite.errors import VideoReadError
from fersuite.video.reader import VIDEO_SUFFIXES, Frame, FrameSampling, VideoReader, is_video
from fersuite.video.run import VideoResult, VideoSettings, predict_video, video_columns
from fersuite.video.smoothing import SMOOTHING, SmoothingSettings
from fersuite.video.tracker import IoUTracker, iou

__all__ = [
    "SMOOTHING",
    "VIDEO_SUFFIXES",
    "Frame",
    "FrameSampling",
    "IoUTracker",
    "SmoothingSettings",
    "VideoReadError",
    "VideoReader",
    "VideoResult",
    "VideoSettings",
    "iou",
    "is_video",
    "predict_video",
    "video_columns",
]
