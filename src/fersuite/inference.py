"""Predicting expression, valence and arousal of image files with a trained model.

A :class:`Predictor` is a model runner (a checkpoint's network, an ONNX Runtime session or a
TorchScript module) plus its :class:`~fersuite.card.ModelCard`; every image goes through
:func:`fersuite.card.load_input` -- the decoding, EXIF orientation, face crop and transform
the model was trained with. The app is :mod:`fersuite.cli.predict`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fersuite.card import FaceCrop, ModelCard, ModelCardFormatError, input_transform, load_input
from fersuite.errors import UserError
from fersuite.types import AffectOutput

__all__ = [
    "IMAGE_SUFFIXES",
    "PredictError",
    "Predictor",
    "find_images",
    "load_predictor",
    "predict_files",
    "read_sidecar",
    "write_predictions",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class PredictError(UserError, ValueError):
    """Bad input to fersuite-predict (one line naming the file or key)."""


@dataclass
class Predictor:
    """A model runner with the model card that says how to feed it."""

    run: Callable[[torch.Tensor], AffectOutput]
    card: ModelCard
    source: str

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.card.class_names

    @property
    def has_va(self) -> bool:
        return self.card.has_va

    @property
    def size(self) -> int:
        return self.card.input_size

    @property
    def channels(self) -> int:
        return self.card.in_chans


def read_sidecar(model_path: Path) -> ModelCard:
    """The model card of an exported model: ``model.json`` beside it (fersuite-export)."""
    sidecar = model_path.with_suffix(".json")
    if not sidecar.is_file():
        raise PredictError(
            f"no sidecar {sidecar.name} beside {model_path} (fersuite-export writes it with the "
            "class names and input spec)"
        )
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError) as exc:
        raise PredictError(f"{sidecar}: not a JSON sidecar: {type(exc).__name__}: {exc}") from exc
    try:  # the model config is checked (never built here): a sidecar naming code is refused
        return ModelCard.from_dict(meta, str(sidecar))
    except ModelCardFormatError as exc:
        raise PredictError(str(exc)) from exc


def load_predictor(path: str | Path, threads: int | None = None) -> Predictor:
    """A :class:`Predictor` for a ``.ckpt`` checkpoint, an ``.onnx`` or a TorchScript ``.pt``."""
    p = Path(path)
    if not p.is_file():
        raise PredictError(f"ckpt_path={p}: file not found (a .ckpt, .onnx or exported .pt)")
    suffix = p.suffix.lower()
    if suffix == ".onnx":
        from fersuite.deploy.onnx import OnnxModel

        card = read_sidecar(p)
        return Predictor(run=OnnxModel(p, threads=threads), card=card, source=str(p))
    if suffix == ".pt":
        from fersuite.deploy.torchscript import TorchScriptModel

        card = read_sidecar(p)
        return Predictor(run=TorchScriptModel(p), card=card, source=str(p))

    from fersuite.checkpoint import load_model_from_checkpoint

    net, card = load_model_from_checkpoint(p)
    return Predictor(run=net, card=card, source=str(p))


def find_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files named by ``inputs`` (files as given, folders searched recursively)."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                raise PredictError(f"inputs: folder {p} holds no {'/'.join(IMAGE_SUFFIXES)} files")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise PredictError(f"inputs: {p} does not exist")
    if not files:
        raise PredictError("inputs: no image given")
    return files


def _batches(files: Sequence[Path], size: int) -> Iterator[list[Path]]:
    for i in range(0, len(files), size):
        yield list(files[i : i + size])


def predict_files(
    predictor: Predictor,
    files: Sequence[Path],
    batch_size: int = 32,
    face_crop: FaceCrop | None = None,
    detector: Any = None,
) -> list[dict[str, Any]]:
    """One row per file: expression, confidence, ``prob_<class>``, valence/arousal (when the
    model was trained with them) and, with a ``detector``, ``face_found``.

    ``face_crop`` overrides the card's (e.g. a detector chosen on the command line)."""
    from fersuite.data.images import ImageReadError

    card = predictor.card
    tf = input_transform(card)
    rows: list[dict[str, Any]] = []
    for chunk in _batches(files, batch_size):
        tensors = []
        found: list[bool] = []
        for f in chunk:
            try:
                x, ok = load_input(card, f, detector, face_crop=face_crop, transform=tf)
            except ImageReadError as exc:
                raise PredictError(f"cannot read image {f}: {exc}") from exc
            tensors.append(x)
            found.append(ok)
        with torch.inference_mode():
            out = predictor.run(torch.stack(tensors).float())
        probs = torch.as_tensor(out.expression).float().softmax(dim=1)
        valence = torch.as_tensor(out.valence).float()
        arousal = torch.as_tensor(out.arousal).float()
        for i, f in enumerate(chunk):
            k = int(probs[i].argmax())
            row: dict[str, Any] = {
                "file": str(f),
                "expression": predictor.class_names[k],
                "confidence": float(probs[i, k]),
            }
            for name, pr in zip(predictor.class_names, probs[i].tolist(), strict=True):
                row[f"prob_{name}"] = float(pr)
            if predictor.has_va:
                row["valence"] = float(valence[i])
                row["arousal"] = float(arousal[i])
            if detector is not None:
                row["face_found"] = found[i]
            rows.append(row)
    return rows


def write_predictions(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """``.csv`` or ``.json`` (a list of rows), written atomically."""
    from fersuite.reporting.tables import write_csv
    from fersuite.utils.io import atomic_write_json

    out = Path(path)
    if out.suffix.lower() == ".json":
        atomic_write_json(out, list(rows))
    elif out.suffix.lower() == ".csv":
        write_csv(out, rows, list(rows[0]) if rows else ["file"])
    else:
        raise PredictError(f"output={out}: expected a .csv or .json file name (or null)")
    return out
