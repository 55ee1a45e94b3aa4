"""Predicting expression, valence and arousal of image files with a trained model.

A :class:`Predictor` is a model runner (a checkpoint's network, an ONNX Runtime session, a
TorchScript module or an ExecuTorch program) plus its :class:`~fersuite.card.ModelCard`; every
image goes through :func:`fersuite.card.load_input` -- the decoding, EXIF orientation, face crop
and transform the model was trained with. The app is :mod:`fersuite.cli.predict`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from fersuite.card import (
    FaceCrop,
    ModelCard,
    ModelCardFormatError,
    input_transform,
    load_input,
    read_card_json,
)
from fersuite.errors import UntrustedFileError, UserError
from fersuite.types import AffectOutput
from fersuite.utils.progress import track

__all__ = [
    "IMAGE_SUFFIXES",
    "PredictError",
    "Predictor",
    "choose_face_crop",
    "find_images",
    "load_predictor",
    "predict_files",
    "print_predictions",
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
    try:  # bounded (size, then nesting depth, then parsed), then every bound of the card; the
        # model config is checked, never built here: a sidecar naming code is refused
        return ModelCard.from_dict(read_card_json(sidecar), str(sidecar))
    except ModelCardFormatError as exc:
        raise PredictError(str(exc)) from exc


def load_predictor(path: str | Path, threads: int | None = None) -> Predictor:
    """A :class:`Predictor` for a ``.ckpt`` checkpoint, an ``.onnx``, a TorchScript ``.pt`` or
    an ExecuTorch ``.pte``. An exported model is checked against its sidecar's card (input,
    classes); a file its reader refuses is an :class:`~fersuite.errors.UntrustedFileError`."""
    p = Path(path)
    if not p.is_file():
        raise PredictError(f"ckpt_path={p}: file not found (a .ckpt, .onnx, .pt or .pte)")
    suffix = p.suffix.lower()
    if suffix == ".onnx":
        from fersuite.deploy.onnx import OnnxModel

        card = read_sidecar(p)
        return Predictor(run=OnnxModel(p, threads, card=card), card=card, source=str(p))
    if suffix == ".pt":
        from fersuite.deploy.base import ExportError
        from fersuite.deploy.torchscript import TorchScriptModel

        card = read_sidecar(p)
        try:
            runner = TorchScriptModel(p)
        except ExportError as exc:  # a refused program: the file, not an export, is at fault
            raise UntrustedFileError(str(exc)) from exc
        return Predictor(run=runner, card=card, source=str(p))
    if suffix == ".pte":
        from fersuite.deploy.executorch import ExecuTorchModel

        card = read_sidecar(p)
        return Predictor(run=ExecuTorchModel(p, threads, card=card), card=card, source=str(p))

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
    chunks = list(_batches(files, batch_size))
    for chunk in track(chunks, f"predicting {len(files)} images"):
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


def choose_face_crop(
    card: ModelCard,
    face_detector: str | None = None,
    model: str | None = None,
    margin: float | None = None,
    score_threshold: float | None = None,
) -> tuple[FaceCrop | None, Any]:
    """(face crop overriding the card's, or None; detector) for fersuite-predict's face_* keys.

    ``face_detector=None`` follows the card: its detector (needing ``model``) or its crop.
    ``none`` takes the centre square; ``yunet``/``haar`` a detector with ``margin`` and
    ``score_threshold`` (default: the card's for the same detector, else 0.2 and 0.6)."""
    crop = card.face_crop
    name = face_detector or (crop.detector if crop.kind == "detector" else "none")
    if name == "none":
        return (FaceCrop(kind="center", exif=crop.exif) if face_detector else None), None
    try:
        from fersuite.data import faces
    except ImportError as exc:
        raise PredictError(
            f"face_detector={name} needs fersuite.data.faces, which this installation lacks"
        ) from exc
    same = crop.kind == "detector" and crop.detector == name
    if margin is None:
        margin = crop.margin if same else 0.2
    if score_threshold is None:
        score_threshold = (crop.score_threshold if same else None) or 0.6
    if not 0.0 <= float(margin) <= 2.0:
        raise PredictError(f"face_margin={margin}; expected a fraction in [0, 2]")
    try:
        detector = faces.make_detector(name, model, float(score_threshold))
    except ValueError as exc:  # ConfigError: names the data.* key it checks
        text = str(exc).replace("data.face_", "face_")
        if not face_detector:
            text = f"the model card says faces were cut with {name}: {text} (or face_detector=none)"
        raise PredictError(text) from exc
    chosen = FaceCrop("detector", float(margin), name, float(score_threshold), crop.exif)
    return replace(chosen, crop_size=crop.crop_size), detector


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


def print_predictions(rows: Sequence[dict[str, Any]], limit: int = 50) -> None:
    from rich.table import Table

    from fersuite.utils.console import make_console

    table = Table(title=f"fersuite predictions ({len(rows)} images)")
    for col in ("file", "expression"):
        table.add_column(col)
    table.add_column("confidence", justify="right")
    has_va = bool(rows) and "valence" in rows[0]
    if has_va:
        table.add_column("valence", justify="right")
        table.add_column("arousal", justify="right")
    has_face = bool(rows) and "face_found" in rows[0]
    if has_face:
        table.add_column("face")
    for row in rows[:limit]:
        cells = [Path(row["file"]).name, row["expression"], f"{row['confidence']:.3f}"]
        if has_va:
            cells += [f"{row['valence']:+.3f}", f"{row['arousal']:+.3f}"]
        if has_face:
            cells.append("found" if row["face_found"] else "none: centre crop")
        table.add_row(*cells)
    console = make_console()
    console.print(table)
    if len(rows) > limit:
        console.print(f"... and {len(rows) - limit} more (see the output file)")
