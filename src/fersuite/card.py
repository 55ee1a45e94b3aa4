"""The model card: everything needed to rebuild a trained model and to feed it an image.

One frozen :class:`ModelCard` travels from training to deployment: ``fersuite-train`` stores
it in every checkpoint (key ``"fersuite"``), ``fersuite-export`` writes it as the ``model.json``
sidecar, and evaluation, export verification, ``fersuite-predict`` and distillation teachers
read it. It holds plain JSON data only:

* ``arch`` + ``kwargs``: the architecture of the model registry and its plain keyword values
  (checked by :func:`fersuite.checkpoint.check_model_card`; never given to Hydra);
* ``class_names`` and ``has_va`` (valence/arousal heads trained);
* ``input`` (:class:`~fersuite.types.InputSpec`): square side, channels, mean, std;
* ``face_crop`` (:class:`FaceCrop`): how the training data turned an image file into a face
  (centre square, a listed box widened by a margin, or a detector), EXIF applied or not.

:func:`load_input` is the one function that turns (card, image file) into the model's input
tensor; the datasets that decode files (``data=folder``), ``fersuite-predict`` and export
verification all go through it (and :func:`decode_face`, its uint8 half). Video frames
(:mod:`fersuite.video`) take :func:`frame_input`, the same cut and transform on a decoded
frame.

Checkpoints written before the card (``input_size``/``in_chans``/``mean``/``std`` at the top
level, no face crop) still load: their face crop is the centre square with EXIF applied, what
``data=folder`` did and what the square images of the other datasets amount to.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fersuite.errors import UserError
from fersuite.types import InputSpec

if TYPE_CHECKING:
    import numpy as np
    import torch

    from fersuite.data.faces import Box, FaceDetector

__all__ = [
    "CARD_VERSION",
    "CROP_KINDS",
    "FaceCrop",
    "InputSpec",
    "ModelCard",
    "ModelCardFormatError",
    "decode_face",
    "decode_frame",
    "frame_input",
    "input_transform",
    "load_input",
    "preprocess",
    "spec_from",
]

CARD_VERSION = 1

#: ``center``: the centre square of the image. ``whole``: the stored images are face crops
#: used whole (FER2013's 48x48, RAF-DB's aligned faces); for a non-square image at predict
#: time its centre square is taken. ``box``: a listed face box widened by ``margin``
#: (AffectNet); without a box the centre square. ``detector``: the face a detector finds
#: (``detector``, ``score_threshold``), widened by ``margin``; the centre square if none.
CROP_KINDS = ("center", "whole", "box", "detector")
DETECTORS = ("yunet", "haar")


class ModelCardFormatError(UserError, ValueError):
    """A model card (checkpoint metadata or sidecar) that is not in the expected shape."""


@dataclass(frozen=True)
class FaceCrop:
    """How the training data cut the face out of an image file."""

    kind: str = "center"
    margin: float = 0.0
    detector: str | None = None
    score_threshold: float | None = None
    exif: bool = True
    #: side of the square uint8 face the crop is resized to before the input transform
    #: (the data cache size); None: the model's input size.
    crop_size: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in CROP_KINDS:
            raise ModelCardFormatError(
                f"face_crop.kind={self.kind!r}; expected one of {CROP_KINDS}"
            )
        margin = float(self.margin)
        if not 0.0 <= margin <= 2.0 or math.isnan(margin):
            raise ModelCardFormatError(f"face_crop.margin={self.margin}; expected 0..2")
        object.__setattr__(self, "margin", margin)
        if self.kind == "detector":
            if self.detector not in DETECTORS:
                raise ModelCardFormatError(
                    f"face_crop.detector={self.detector!r}; expected one of {DETECTORS}"
                )
        elif self.detector is not None:
            raise ModelCardFormatError(
                f"face_crop.detector={self.detector!r} with kind={self.kind!r}; "
                "a detector goes with kind='detector'"
            )
        if self.crop_size is not None and (
            isinstance(self.crop_size, bool) or int(self.crop_size) < 1
        ):
            raise ModelCardFormatError(f"face_crop.crop_size={self.crop_size}; expected >= 1")

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "margin": self.margin,
            "detector": self.detector,
            "score_threshold": self.score_threshold,
            "exif": self.exif,
            "crop_size": self.crop_size,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FaceCrop:
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ModelCardFormatError(f"face_crop has unknown keys {unknown}")
        thr = d.get("score_threshold")
        size = d.get("crop_size")
        return cls(
            kind=str(d.get("kind", "center")),
            margin=float(d.get("margin", 0.0)),
            detector=None if d.get("detector") is None else str(d["detector"]),
            score_threshold=None if thr is None else float(thr),
            exif=bool(d.get("exif", True)),
            crop_size=None if size is None else int(size),
        )

    def describe(self) -> str:
        where = {
            "center": "centre square",
            "whole": "whole image (centre square if not square)",
            "box": f"face box + margin {self.margin:g} (centre square without a box)",
            "detector": f"{self.detector} face + margin {self.margin:g} "
            f"(score >= {self.score_threshold}; centre square if none)",
        }[self.kind]
        return f"{where}, EXIF {'applied' if self.exif else 'ignored'}"


def channel_stats(values: Sequence[float], channels: int, what: str) -> tuple[float, ...]:
    """Broadcast a per-channel mean/std to ``channels`` values (1 value -> all channels)."""
    vals = tuple(float(v) for v in values)
    if len(vals) == 1:
        vals = vals * channels
    if len(vals) != channels:
        raise ValueError(
            f"{what} has {len(vals)} values for {channels} channels; expected 1 or {channels}"
        )
    if what.endswith("std") and any(v <= 0 for v in vals):
        raise ValueError(f"{what}={list(vals)}; standard deviations must be > 0")
    return vals


def spec_from(
    size: int, channels: int, mean: Sequence[float], std: Sequence[float], what: str = "input"
) -> InputSpec:
    """An :class:`InputSpec` with mean/std broadcast to ``channels`` values (validated)."""
    if channels not in (1, 3):
        raise ValueError(f"{what} has {channels} channels; fersuite supports 1 or 3")
    if size < 1:
        raise ValueError(f"{what} size={size}; expected >= 1")
    return InputSpec(
        size=int(size),
        channels=int(channels),
        mean=channel_stats(mean, channels, f"{what} mean"),
        std=channel_stats(std, channels, f"{what} std"),
    )


def _spec(size: Any, channels: Any, mean: Any, std: Any) -> InputSpec:
    """A checked input spec keeping mean/std as given (one value stands for every channel)."""
    try:
        spec_from(int(size), int(channels), list(mean), list(std), "model card input")
        return InputSpec(
            int(size), int(channels), tuple(float(v) for v in mean), tuple(float(v) for v in std)
        )
    except (TypeError, ValueError) as exc:
        raise ModelCardFormatError(str(exc)) from exc


@dataclass(frozen=True)
class ModelCard:
    """What a trained model is and what it needs to see (see the module docstring)."""

    arch: str
    kwargs: dict[str, Any]
    class_names: tuple[str, ...]
    has_va: bool
    input: InputSpec
    face_crop: FaceCrop = field(default_factory=FaceCrop)

    # -- the old CheckpointMeta's names (read by evaluation, teachers, tests) ---------------
    @property
    def model_cfg(self) -> dict[str, Any]:
        """``{"_target_": <the registry's factory>, "arch": ..., **kwargs}`` (plain data)."""
        from fersuite.checkpoint import MODEL_FACTORY

        return {"_target_": MODEL_FACTORY, "arch": self.arch, **self.kwargs}

    @property
    def input_size(self) -> int:
        return self.input.size

    @property
    def in_chans(self) -> int:
        return self.input.channels

    @property
    def mean(self) -> tuple[float, ...]:
        return self.input.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.input.std

    @property
    def crop_size(self) -> int:
        """Side of the uint8 face before the input transform."""
        return self.face_crop.crop_size or self.input.size

    def with_input(self, spec: InputSpec) -> ModelCard:
        return replace(self, input=_spec(spec.size, spec.channels, spec.mean, spec.std))

    # -- plain data --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "card_version": CARD_VERSION,
            "model_cfg": self.model_cfg,
            "class_names": list(self.class_names),
            "has_va": self.has_va,
            "input": {
                "size": self.input.size,
                "channels": self.input.channels,
                "mean": list(self.input.mean),
                "std": list(self.input.std),
            },
            "face_crop": self.face_crop.to_dict(),
            # the pre-card keys, for readers of the old format (older fersuite versions)
            "input_size": self.input.size,
            "in_chans": self.input.channels,
            "mean": list(self.input.mean),
            "std": list(self.input.std),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "<model card>") -> ModelCard:
        """Read a card (any version, and the pre-card checkpoint metadata); the model config
        is checked by :func:`fersuite.checkpoint.check_model_card` (plain values, registry)."""
        from fersuite.checkpoint import check_model_card

        if not isinstance(d, Mapping):
            raise ModelCardFormatError(f"{source}: model card is a {type(d).__name__}, not a dict")
        checked = check_model_card(d.get("model_cfg"), source)
        try:
            if isinstance(d.get("input"), Mapping):
                inp = d["input"]
                spec = _spec(inp["size"], inp["channels"], inp["mean"], inp["std"])
            else:  # before the card: flat keys
                spec = _spec(
                    d["input_size"], d["in_chans"], d.get("mean", (0.5,)), d.get("std", (0.5,))
                )
            crop = FaceCrop.from_dict(d.get("face_crop") or {})
            names = d["class_names"]
            if isinstance(names, str) or not isinstance(names, Sequence) or not names:
                raise ModelCardFormatError(f"class_names={names!r}; expected a list of names")
            return cls(
                arch=str(checked["arch"]),
                kwargs={k: v for k, v in checked.items() if k not in ("_target_", "arch")},
                class_names=tuple(str(c) for c in names),
                has_va=bool(d.get("has_va", True)),
                input=spec,
                face_crop=crop,
            )
        except (KeyError, TypeError, ValueError) as exc:
            what = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ModelCardFormatError(
                f"{source}: not a fersuite model card (class_names, has_va, input "
                f"size/channels/mean/std, face_crop): {what}"
            ) from exc

    def rebuild(self, source: str = "<model card>") -> torch.nn.Module:
        """The (untrained) network, through the model registry with plain values only."""
        from fersuite.checkpoint import build_model_from_card

        return build_model_from_card(self.model_cfg, source, num_classes=len(self.class_names))


# ------------------------------------------------------------------------------------------
# image file -> model input
# ------------------------------------------------------------------------------------------


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
    Raises :class:`fersuite.data.images.ImageReadError` for unreadable files.
    """
    from fersuite.data.faces import load_face
    from fersuite.data.images import color_mode

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
    from fersuite.data.transforms import build_transforms

    spec = card.input
    return build_transforms(spec.size, spec.channels, spec.mean, spec.std, train=False)


def preprocess(card: ModelCard, face: np.ndarray, transform: Any = None) -> torch.Tensor:
    """A uint8 (H, W) or (H, W, 3) face -> the model's (C, S, S) float32 input."""
    import numpy as np
    import torch

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
    import numpy as np
    from PIL import Image

    from fersuite.data.faces import cut_face
    from fersuite.data.images import color_mode

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


def training_card(
    model_cfg: Any,
    class_names: Sequence[str],
    has_va: bool,
    input_size: int,
    in_chans: int,
    mean: Sequence[float],
    std: Sequence[float],
    face_crop: FaceCrop | None = None,
) -> dict[str, Any]:
    """The card a training run stores in its checkpoints, as plain data.

    A model config that is not the registry's (another ``_target_``) is stored as it is, as
    before the card; such a checkpoint cannot be rebuilt by fersuite (it never could)."""
    from fersuite.checkpoint import ModelCardError

    raw = {
        "card_version": CARD_VERSION,
        "model_cfg": model_cfg,
        "class_names": [str(c) for c in class_names],
        "has_va": bool(has_va),
        "input": {
            "size": int(input_size),
            "channels": int(in_chans),
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in std],
        },
        "face_crop": (face_crop or FaceCrop()).to_dict(),
        "input_size": int(input_size),
        "in_chans": int(in_chans),
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
    }
    try:
        return ModelCard.from_dict(raw, "model").to_dict()
    except ModelCardError:
        return raw
