"""The one function that turns an image into a model's input: (model card, image file or
decoded frame) -> the (C, S, S) float tensor the model was trained on.

:func:`load_input` is used by the datasets that decode files (``data=folder``),
``fersuite-predict`` and export verification (:func:`decode_face` is its uint8 half); video
frames (:mod:`fersuite.video`) take :func:`frame_input`, the same cut and transform on a frame
already in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from fersuite.card import FaceCrop, ModelCard
from fersuite.data.faces import Box, FaceDetector, cut_face, load_face
from fersuite.data.images import color_mode
from fersuite.data.transforms import build_transforms

__all__ = [
    "decode_face",
    "decode_frame",
    "frame_input",
    "input_transform",
    "load_input",
    "preprocess",
]


def decode_face(
    crop: FaceCrop,
    path: str | Path,
    channels: int,
    size: int,
    detector: FaceDetector | None = None,
    box: Box | None = None,
) -> tuple[np.ndarray, bool]:
    """The face of ``path`` as a ``size``×``size`` uint8 array, cut as ``crop`` says.

    ``box`` (stored-image pixels; ``kind='box'``) or else ``detector`` (``kind='detector'``;
    built by the caller: it needs a model file) gives the face, widened by the margin; without
    them the centre square. The flag is False when a detector found no face.
    Raises :class:`fersuite.errors.ImageReadError` for unreadable files.
    """
    return load_face(
        Path(path),
        color_mode(channels),
        size,
        box=box,
        margin=crop.margin,
        detector=detector,
        exif_transpose=crop.exif,
    )


def input_transform(card: ModelCard) -> Any:
    """uint8 CHW face -> the normalised (C, S, S) float input (the training eval transform)."""
    spec = card.input
    return build_transforms(spec.size, spec.channels, spec.mean, spec.std, train=False)


def preprocess(card: ModelCard, face: np.ndarray, transform: Any = None) -> torch.Tensor:
    """A uint8 (H, W) or (H, W, 3) face -> the model's (C, S, S) float32 input."""
    img = torch.from_numpy(np.array(face, dtype=np.uint8, copy=True))
    img = img.unsqueeze(0) if img.ndim == 2 else img.permute(2, 0, 1)
    return (transform or input_transform(card))(img).float()  # type: ignore[no-any-return]


def load_input(
    card: ModelCard,
    path: str | Path,
    detector: FaceDetector | None = None,
    box: Box | None = None,
    face_crop: FaceCrop | None = None,
    transform: Any = None,
) -> tuple[torch.Tensor, bool]:
    """(card, image file) -> (the model's (C, S, S) input tensor, face found).

    The same steps as training: decode with EXIF applied, cut the face as the card's
    ``face_crop`` says (``face_crop`` overrides it), resize to the crop size, then the eval
    transform (channels, resize to the input size, /255, mean/std).
    """
    crop = face_crop or card.face_crop
    face, found = decode_face(crop, path, card.in_chans, card.crop_size, detector, box)
    return preprocess(card, face, transform), found


def decode_frame(
    crop: FaceCrop, rgb: np.ndarray, channels: int, size: int, box: Box | None = None
) -> np.ndarray:
    """The face of a decoded frame (an (H, W, 3) uint8 RGB array, e.g. a video frame) as a
    ``size``×``size`` uint8 array: the square around ``box`` (frame pixels; a detector's or a
    tracker's face) widened by the crop's margin, else the centre square -- the cut
    :func:`decode_face` makes of an image file."""

    img = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB")
    return cut_face(img, color_mode(channels), size, box, crop.margin)


def frame_input(
    card: ModelCard,
    rgb: np.ndarray,
    box: Box | None = None,
    face_crop: FaceCrop | None = None,
    transform: Any = None,
) -> torch.Tensor:
    """(card, decoded RGB frame) -> the model's (C, S, S) input tensor: :func:`load_input`
    for a frame already in memory (video, camera). ``box`` is the face found in the frame
    (None: the centre square, as the card's crop does without a box or a detected face)."""
    crop = face_crop or card.face_crop
    face = decode_frame(crop, rgb, card.in_chans, card.crop_size, box)
    return preprocess(card, face, transform)
