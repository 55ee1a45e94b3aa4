"""The model card: everything needed to rebuild a trained model and to feed it an image.

One frozen :class:`ModelCard` travels from training to deployment: ``fersuite-train`` stores
it in every checkpoint (key ``"fersuite"``), ``fersuite-export`` writes it as the ``model.json``
sidecar, and evaluation, export verification, ``fersuite-predict`` and distillation teachers
read it. It holds plain JSON data only:

* ``arch`` + ``kwargs``: the architecture of the model registry and its plain keyword values
  (their shape checked here; the registry's names and ranges by
  :func:`fersuite.checkpoint.read_card`, the reader of every foreign card; never given to
  Hydra);
* ``class_names`` and ``has_va`` (valence/arousal heads trained);
* ``input`` (:class:`~fersuite.types.InputSpec`): square side, channels, mean, std;
* ``face_crop`` (:class:`FaceCrop`): how the training data turned an image file into a face
  (centre square, a listed box widened by a margin, or a detector), EXIF applied or not.

:func:`fersuite.data.preprocess.load_input` is the one function that turns (card, image
file) into the model's input tensor.

This module is plain data and its validation: it imports nothing above :mod:`fersuite.errors`
and :mod:`fersuite.types`.

Checkpoints written before the card (``input_size``/``in_chans``/``mean``/``std`` at the top
level, no face crop) still load: their face crop is the centre square with EXIF applied, what
``data=folder`` did and what the square images of the other datasets amount to.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fersuite.errors import ModelCardError, ModelCardFormatError
from fersuite.types import InputSpec

__all__ = [
    "BOUNDS",
    "CARD_VERSION",
    "CROP_KINDS",
    "MODEL_FACTORY",
    "CardBounds",
    "FaceCrop",
    "InputSpec",
    "ModelCard",
    "ModelCardFormatError",
    "plain_model_cfg",
    "read_card_json",
    "spec_from",
]

CARD_VERSION = 1

#: The one model factory a card names: the model registry (``arch`` + plain keyword values).
MODEL_FACTORY = "fersuite.models.registry.create_model"

#: ``center``: the centre square of the image. ``whole``: the stored images are face crops
#: used whole (FER2013's 48x48, RAF-DB's aligned faces); for a non-square image at predict
#: time its centre square is taken. ``box``: a listed face box widened by ``margin``
#: (AffectNet); without a box the centre square. ``detector``: the face a detector finds
#: (``detector``, ``score_threshold``), widened by ``margin``; the centre square if none.
CROP_KINDS = ("center", "whole", "box", "detector")
#: ``mtcnn``: fersuite's default detector (weights in its pinned package); ``yunet``/``haar``
#: need a model file (see :mod:`fersuite.data.faces`).
DETECTORS = ("mtcnn", "yunet", "haar")


@dataclass(frozen=True)
class CardBounds:
    """The limits of everything a model card read from a file may say, checked before
    anything is allocated or built (the architectures' keyword ranges are declared beside
    the registry, :data:`fersuite.models.registry.KWARG_RANGES`)."""

    #: ``input.size`` and ``face_crop.crop_size`` (fersuite's largest model input is 256)
    max_side: int = 1024
    channels: tuple[int, ...] = (1, 3)
    max_classes: int = 1000
    max_name_len: int = 64
    mean: tuple[float, float] = (-1000.0, 1000.0)
    std: tuple[float, float] = (1e-6, 1000.0)
    max_margin: float = 2.0
    #: a JSON card file (``model.json``): bytes, then nesting depth, checked before parsing
    max_json_bytes: int = 1 << 20
    max_depth: int = 32
    #: any string of a card, and the values (scalars, lists, dicts) one card may hold
    max_str_len: int = 4096
    max_nodes: int = 100_000


BOUNDS = CardBounds()
#: the keys of a card besides ``model_cfg`` (checked by fersuite.checkpoint.check_model_card)
_CARD_KEYS = (
    "card_version", "class_names", "has_va", "input", "face_crop",
    "input_size", "in_chans", "mean", "std",
)  # fmt: skip
#: a class name: letters, digits, space and ``_-+.`` (no path, no newline, no ``${``)
_NAME = re.compile(r"[A-Za-z0-9 _+.\-]+")
#: a key shown as ``a.key`` in messages (others are shown quoted: ``a['k\\ney']``)
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _show(value: Any) -> str:
    """A short repr of a value from a file (never recursing into it)."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"<an integer of {value.bit_length()} bits>"
    if value is None or isinstance(value, bool | int | float):
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    return f"<a {type(value).__name__}>"


def _number(value: Any, key: str, lo: float, hi: float, integer: bool = False) -> Any:
    """``value`` when it is a finite number (an int when ``integer``) in ``lo..hi``."""
    kind = "an integer" if integer else "a number"
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or not lo <= value <= hi:  # NaN fails lo <= value
        raise ModelCardFormatError(f"{key}={_show(value)}; expected {kind} in {lo:g}..{hi:g}")
    return int(value) if integer else float(value)


def _check_tree(value: Any, key: str) -> None:
    """Plain JSON-like data (str keys), at most ``max_depth`` deep and ``max_nodes`` values,
    strings of at most ``max_str_len`` characters without ``${``, finite 64-bit numbers."""
    stack: list[tuple[Any, str, int]] = [(value, key, 1)]
    nodes = 0
    while stack:
        v, where, depth = stack.pop()
        nodes += 1
        if depth > BOUNDS.max_depth or nodes > BOUNDS.max_nodes:
            what = "deep" if depth > BOUNDS.max_depth else "large"
            raise ModelCardFormatError(
                f"{key} is too {what} (at most {BOUNDS.max_depth} levels and "
                f"{BOUNDS.max_nodes} values)"
            )
        if isinstance(v, Mapping):
            for k, sub in v.items():
                if not isinstance(k, str):
                    raise ModelCardFormatError(f"{where} has a non-string key {_show(k)}")
                if len(k) > BOUNDS.max_str_len or "${" in k:
                    raise ModelCardFormatError(f"{where} has the key {_show(k)}")
                path = f"{where}.{k}" if _KEY.fullmatch(k) else f"{where}[{_show(k)}]"
                stack.append((sub, path, depth + 1))
        elif isinstance(v, list | tuple):
            stack.extend((sub, f"{where}[{i}]", depth + 1) for i, sub in enumerate(v))
        elif isinstance(v, str):
            if len(v) > BOUNDS.max_str_len:
                raise ModelCardFormatError(
                    f"{where} is a string of {len(v)} characters; at most {BOUNDS.max_str_len}"
                )
            if "${" in v:
                raise ModelCardFormatError(
                    f"{where}={_show(v)}: an interpolation is not a plain value"
                )
        elif isinstance(v, float) and not math.isfinite(v):
            raise ModelCardFormatError(f"{where}={v}; expected a finite number")
        elif isinstance(v, int) and v.bit_length() > 63:
            raise ModelCardFormatError(f"{where}={_show(v)}; expected a 64-bit integer")
        elif not (v is None or isinstance(v, bool | int | float)):
            raise ModelCardFormatError(
                f"{where} is a {type(v).__name__}; expected plain values (str, int, float, "
                "bool, None and lists/dicts of them)"
            )


def class_name_problem(name: Any) -> str | None:
    """Why ``name`` cannot be a class name (None: it can)."""
    if not isinstance(name, str):
        return f"is a {type(name).__name__}, not a string"
    if not 1 <= len(name) <= BOUNDS.max_name_len:
        return f"has {len(name)} characters; expected 1..{BOUNDS.max_name_len}"
    if not _NAME.fullmatch(name) or ".." in name:
        return "may hold letters, digits, space and _-+. only, and no '..'"
    if name != name.strip() or not name.strip(". "):
        return "starts or ends with a space, or is dots only"
    return None


def _class_names(names: Any) -> tuple[str, ...]:
    if isinstance(names, str) or not isinstance(names, list | tuple) or not names:
        raise ModelCardFormatError(f"class_names={_show(names)}; expected a list of names")
    if len(names) > BOUNDS.max_classes:
        raise ModelCardFormatError(
            f"class_names has {len(names)} names; expected 1..{BOUNDS.max_classes}"
        )
    for i, name in enumerate(names):
        problem = class_name_problem(name)
        if problem:
            raise ModelCardFormatError(f"class_names[{i}]={_show(name)} {problem}")
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ModelCardFormatError(f"class_names names {twice[0]!r} twice")
    return tuple(names)


#: a JSON string (an unterminated one runs to the end); possessive: linear time
_JSON_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)', re.DOTALL)
_INNERMOST = re.compile(rb"\[\]|\{\}")
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(data: bytes, limit: int) -> int | None:
    """The nesting depth of JSON text, counted up to ``limit + 1`` without a parser (strings
    removed, then the innermost bracket pairs, one level a round); None when the brackets do
    not pair up (not JSON)."""
    rest = _JSON_STRING.sub(b"", data).translate(None, _NOT_BRACKET)
    if re.search(rb"[\[{]{%d}" % (limit + 1), rest):  # a run of openers: no need to count
        return limit + 1
    depth = 0
    while rest and depth <= limit:
        rest, pairs = _INNERMOST.subn(b"", rest)
        if not pairs:
            return None
        depth += 1
    return depth


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"the key {_show(k)} appears twice in one object")
        out[k] = v
    return out


def parse_card_json(data: bytes, source: str) -> Any:
    """JSON text of a card file, bounded: its size, then its nesting depth (scanned without
    parsing), then parsed; a one-line :class:`ModelCardFormatError` naming ``source``."""
    if len(data) > BOUNDS.max_json_bytes:
        raise ModelCardFormatError(
            f"{source}: {len(data)} bytes or more; a model card is at most "
            f"{BOUNDS.max_json_bytes} bytes"
        )
    depth = json_depth(data, BOUNDS.max_depth)
    if depth is None:
        raise ModelCardFormatError(f"{source}: not a JSON sidecar: unbalanced brackets")
    if depth > BOUNDS.max_depth:
        raise ModelCardFormatError(
            f"{source}: JSON nested more than {BOUNDS.max_depth} levels deep"
        )
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise ModelCardFormatError(f"{source}: not a JSON sidecar: {first}") from exc


def read_card_json(path: str | Path) -> Any:
    """The JSON of a card file (e.g. ``model.json``): at most ``max_json_bytes`` are read
    (a larger file is refused before reading), then :func:`parse_card_json`."""
    p = Path(path)
    limit = BOUNDS.max_json_bytes
    try:
        if p.stat().st_size > limit:
            raise ModelCardFormatError(
                f"{p}: {p.stat().st_size} bytes; a model card is at most {limit} bytes"
            )
        with p.open("rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise ModelCardFormatError(f"{p}: cannot read the model card: {exc.strerror}") from exc
    return parse_card_json(data, str(p))


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
    #: where a detector is used (``kind='detector'``, or fersuite-predict finding the face
    #: for a model trained on cut faces): an image whose longer side is at most this many
    #: pixels is an already-cut face, taken whole (centre square) and never searched. None:
    #: twice the crop size (:meth:`precropped_limit`); 0: every image is searched.
    precropped_max_side: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or self.kind not in CROP_KINDS:
            raise ModelCardFormatError(
                f"face_crop.kind={_show(self.kind)}; expected one of {CROP_KINDS}"
            )
        margin = _number(self.margin, "face_crop.margin", 0.0, BOUNDS.max_margin)
        object.__setattr__(self, "margin", margin)
        if self.kind == "detector":
            if not isinstance(self.detector, str) or self.detector not in DETECTORS:
                raise ModelCardFormatError(
                    f"face_crop.detector={_show(self.detector)}; expected one of {DETECTORS}"
                )
        elif self.detector is not None:
            raise ModelCardFormatError(
                f"face_crop.detector={_show(self.detector)} with kind={self.kind!r}; "
                "a detector goes with kind='detector'"
            )
        if self.score_threshold is not None:
            thr = _number(self.score_threshold, "face_crop.score_threshold", 0.0, 1.0)
            object.__setattr__(self, "score_threshold", thr)
        if not isinstance(self.exif, bool):
            raise ModelCardFormatError(f"face_crop.exif={_show(self.exif)}; expected true/false")
        if self.crop_size is not None:
            size = _number(self.crop_size, "face_crop.crop_size", 1, BOUNDS.max_side, True)
            object.__setattr__(self, "crop_size", size)
        if self.precropped_max_side is not None:
            limit = _number(
                self.precropped_max_side,
                "face_crop.precropped_max_side",
                0,
                2 * BOUNDS.max_side,
                True,
            )
            object.__setattr__(self, "precropped_max_side", limit)

    def precropped_limit(self, crop_size: int) -> int:
        """The longest side (px) of an image taken as an already-cut face when a detector
        is used: ``precropped_max_side``, else twice ``crop_size`` (the model's crop size,
        :attr:`ModelCard.crop_size`; FER2013's 48 px faces: up to 96 px)."""
        if self.precropped_max_side is not None:
            return self.precropped_max_side
        return 2 * int(crop_size)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "margin": self.margin,
            "detector": self.detector,
            "score_threshold": self.score_threshold,
            "exif": self.exif,
            "crop_size": self.crop_size,
            "precropped_max_side": self.precropped_max_side,
        }

    @classmethod
    def from_dict(cls, d: Any) -> FaceCrop:
        if not isinstance(d, Mapping):
            raise ModelCardFormatError(f"face_crop is a {type(d).__name__}; expected a mapping")
        unknown = sorted(_show(k) for k in set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ModelCardFormatError(f"face_crop has unknown keys {', '.join(unknown[:5])}")
        return cls(
            kind=d.get("kind", "center"),
            margin=d.get("margin", 0.0),
            detector=d.get("detector"),
            score_threshold=d.get("score_threshold"),
            exif=d.get("exif", True),
            crop_size=d.get("crop_size"),
            precropped_max_side=d.get("precropped_max_side"),
        )

    def describe(self) -> str:
        where = {
            "center": "centre square",
            "whole": "whole image (centre square if not square)",
            "box": f"face box + margin {self.margin:g} (centre square without a box)",
            "detector": f"{self.detector} face + margin {self.margin:g}, eyes levelled when "
            f"it gives landmarks (score >= {self.score_threshold}; centre square if none)",
        }[self.kind]
        if self.kind == "detector":
            limit = self.precropped_max_side
            up_to = "twice the crop size" if limit is None else f"{limit} px"
            where += (
                "; every image searched"
                if limit == 0
                else f"; an image up to {up_to} a side is a cut face, taken whole"
            )
        return f"{where}, EXIF {'applied' if self.exif else 'ignored'}"


def channel_stats(values: Sequence[float], channels: int, what: str) -> tuple[float, ...]:
    """Broadcast a per-channel mean/std to ``channels`` values (1 value -> all channels)."""
    vals = tuple(float(v) for v in values)
    if not all(math.isfinite(v) for v in vals):
        raise ValueError(f"{what}={list(vals)}; expected finite numbers")
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


def _stats(values: Any, key: str, channels: int, lo: float, hi: float) -> tuple[float, ...]:
    if isinstance(values, int | float) and not isinstance(values, bool):
        values = [values]
    if not isinstance(values, list | tuple) or len(values) not in {1, channels}:
        raise ModelCardFormatError(
            f"{key}={_show(values)}; expected a list of 1 or {channels} numbers"
        )
    return tuple(_number(v, f"{key}[{i}]", lo, hi) for i, v in enumerate(values))


_INPUT_KEYS = ("input.size", "input.channels", "input.mean", "input.std")
_FLAT_KEYS = ("input_size", "in_chans", "mean", "std")  # before the card


def _spec(
    size: Any, channels: Any, mean: Any, std: Any, keys: tuple[str, ...] = _INPUT_KEYS
) -> InputSpec:
    """A checked input spec keeping mean/std as given (one value stands for every channel)."""
    side = _number(size, keys[0], 1, BOUNDS.max_side, integer=True)
    if isinstance(channels, bool) or channels not in BOUNDS.channels:
        raise ModelCardFormatError(f"{keys[1]}={_show(channels)}; expected 1 or 3")
    c = int(channels)
    m = _stats(mean, keys[2], c, *BOUNDS.mean)
    s = _stats(std, keys[3], c, *BOUNDS.std)
    return InputSpec(side, c, m, s)


_PLAIN = "plain values (str, int, float, bool, None and lists/dicts of them)"
_KEYWORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")


def model_cfg_error(source: str, what: str) -> ModelCardError:
    return ModelCardError(f"{source}: refusing to rebuild the model: {what}")


def _check_plain(
    value: Any, key: str, source: str, depth: int = 1, seen: list[int] | None = None
) -> Any:
    """A deep copy of ``value`` when it is plain data within the card's bounds (depth, number
    of values, string length, finite numbers); a one-line refusal otherwise."""
    seen = [0] if seen is None else seen
    seen[0] += 1
    if depth > BOUNDS.max_depth or seen[0] > BOUNDS.max_nodes:
        raise model_cfg_error(
            source,
            f"{key}: nested too deep or too large (at most {BOUNDS.max_depth} levels and "
            f"{BOUNDS.max_nodes} values)",
        )
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise model_cfg_error(
                    source, f"{key} has a non-string key of type {type(k).__name__}"
                )
            if not _KEYWORD.fullmatch(k):
                raise model_cfg_error(
                    source, f"{key} has the key {short_repr(k)}; expected a keyword name"
                )
            sub = f"{key}.{k}"
            if k == "_target_":
                raise model_cfg_error(
                    source,
                    f"{sub}={short_repr(v)}: a nested _target_ is never run; expected {_PLAIN}",
                )
            if k.startswith("_") and k.endswith("_"):
                raise model_cfg_error(
                    source, f"{sub}: Hydra keys are not accepted; expected {_PLAIN}"
                )
            out[k] = _check_plain(v, sub, source, depth + 1, seen)
        return out
    if isinstance(value, list | tuple):
        return [
            _check_plain(v, f"{key}[{i}]", source, depth + 1, seen) for i, v in enumerate(value)
        ]
    if isinstance(value, str):
        if "${" in value:
            raise model_cfg_error(
                source, f"{key}={short_repr(value)}: an interpolation is not a plain value"
            )
        if len(value) > BOUNDS.max_str_len:
            raise model_cfg_error(
                source, f"{key} is {len(value)} characters; at most {BOUNDS.max_str_len}"
            )
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise model_cfg_error(source, f"{key}={value}; expected a finite number")
    if isinstance(value, int) and value.bit_length() > 63:
        raise model_cfg_error(source, f"{key}: an integer of {value.bit_length()} bits; at most 64")
    if value is None or isinstance(value, bool | int | float):
        return value
    raise model_cfg_error(source, f"{key} is a {type(value).__name__}, not one of the {_PLAIN}")


def short_repr(value: Any) -> str:
    """A short repr of a value from a file (a container is not recursed into)."""
    if isinstance(value, Mapping):
        return "{...}"
    if isinstance(value, list | tuple):
        return "[...]"
    if isinstance(value, int) and value.bit_length() > 64:
        return "<a large integer>"
    if value is None or isinstance(value, bool | int | float | str):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return f"<a {type(value).__name__}>"


def plain_model_cfg(model_cfg: Any, source: str) -> dict[str, Any]:
    """``{"_target_": MODEL_FACTORY, "arch": <str>, **plain keyword values}``: the shape of a
    card's model config, checked without importing a model (the registry's own check is
    :func:`fersuite.checkpoint.check_model_card`). Raises :class:`ModelCardError`."""
    if not isinstance(model_cfg, Mapping):
        raise model_cfg_error(
            source, f"model_cfg is a {type(model_cfg).__name__}; expected a mapping"
        )
    target = model_cfg.get("_target_", MODEL_FACTORY)
    if target != MODEL_FACTORY:
        raise model_cfg_error(
            source,
            f"model_cfg._target_={short_repr(target)}; only {MODEL_FACTORY} (the model registry) "
            "is accepted",
        )
    body = {k: v for k, v in model_cfg.items() if k != "_target_"}
    checked: dict[str, Any] = _check_plain(body, "model_cfg", source)
    arch = checked.get("arch")
    if not isinstance(arch, str) or not _KEYWORD.fullmatch(arch):
        raise model_cfg_error(
            source, f"model_cfg.arch={short_repr(arch)}; expected an architecture name"
        )
    return {"_target_": MODEL_FACTORY, **checked}


@dataclass(frozen=True)
class ModelCard:
    """What a trained model is and what it needs to see (see the module docstring)."""

    arch: str
    kwargs: dict[str, Any]
    class_names: tuple[str, ...]
    has_va: bool
    input: InputSpec
    face_crop: FaceCrop = field(default_factory=FaceCrop)

    # -- convenience views of the input spec and the model config ---------------------------
    @property
    def model_cfg(self) -> dict[str, Any]:
        """``{"_target_": <the registry's factory>, "arch": ..., **kwargs}`` (plain data)."""
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
        """The card with the input ``spec`` (fersuite's own values, e.g. numpy numbers)."""
        mean, std = [float(v) for v in spec.mean], [float(v) for v in spec.std]
        return replace(self, input=_spec(int(spec.size), int(spec.channels), mean, std))

    def __post_init__(self) -> None:
        _class_names(self.class_names)

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
    def from_dict(cls, d: Any, source: str = "<model card>") -> ModelCard:
        """Read a card (any version, and the pre-card checkpoint metadata) into checked plain
        values: every bound of :data:`BOUNDS`; the model config is checked by
        :func:`plain_model_cfg` (plain values; a file's card is read by
        :func:`fersuite.checkpoint.read_card`, which adds the registry's check).
        Raises :class:`ModelCardFormatError` (or ``ModelCardError`` for the model config):
        one line naming ``source`` and the key."""
        if not isinstance(d, Mapping):
            raise ModelCardFormatError(f"{source}: model card is a {type(d).__name__}, not a dict")
        try:
            for key in _CARD_KEYS:
                if key in d:
                    _check_tree(d[key], key)
            checked = plain_model_cfg(d.get("model_cfg"), source)
            if "input" in d:
                inp = d["input"]
                if not isinstance(inp, Mapping):
                    raise ModelCardFormatError(f"input={_show(inp)}; expected a mapping")
                missing = [k for k in ("size", "channels", "mean", "std") if k not in inp]
                if missing:
                    raise ModelCardFormatError(f"input has no {missing[0]!r}")
                spec = _spec(inp["size"], inp["channels"], inp["mean"], inp["std"])
            else:  # before the card: flat keys
                missing = [k for k in ("input_size", "in_chans") if k not in d]
                if missing:
                    raise ModelCardFormatError(f"no {missing[0]!r} (nor 'input')")
                mean, std = d.get("mean", [0.5]), d.get("std", [0.5])
                spec = _spec(d["input_size"], d["in_chans"], mean, std, _FLAT_KEYS)
            crop = FaceCrop.from_dict({} if d.get("face_crop") is None else d["face_crop"])
            if "class_names" not in d:
                raise ModelCardFormatError("no 'class_names'")
            names = _class_names(d["class_names"])
            has_va = d.get("has_va", True)
            if not isinstance(has_va, bool):
                raise ModelCardFormatError(f"has_va={_show(has_va)}; expected true/false")
        except ModelCardFormatError as exc:
            if str(exc).startswith(f"{source}: "):
                raise
            raise ModelCardFormatError(f"{source}: model card: {exc}") from exc
        return cls(
            arch=str(checked["arch"]),
            kwargs={k: v for k, v in checked.items() if k not in ("_target_", "arch")},
            class_names=names,
            has_va=has_va,
            input=spec,
            face_crop=crop,
        )
