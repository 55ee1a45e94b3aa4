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
from rich.markup import escape
from rich.table import Table

from fersuite.card import FaceCrop, ModelCard, read_card_json
from fersuite.checkpoint import load_model_from_checkpoint, read_card
from fersuite.data import faces
from fersuite.data.preprocess import input_transform, load_input
from fersuite.deploy.base import FILES, exported_format
from fersuite.deploy.torchscript import TorchScriptModel
from fersuite.errors import (
    ExportError,
    ImageReadError,
    InputError,
    ModelCardFormatError,
    PredictError,
    UntrustedFileError,
)
from fersuite.reporting.tables import write_csv
from fersuite.types import AffectOutput
from fersuite.utils.console import make_console
from fersuite.utils.io import atomic_write_json
from fersuite.utils.progress import track

__all__ = [
    "IMAGE_SUFFIXES",
    "ON_ERROR",
    "InputError",
    "PredictError",
    "Predictor",
    "choose_face_crop",
    "error_row",
    "find_broken",
    "find_images",
    "load_predictor",
    "predict_files",
    "print_predictions",
    "read_sidecar",
    "write_predictions",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

#: What fersuite-predict does at an input it cannot read (``on_error``).
ON_ERROR = ("continue", "stop")


def error_row(file: str | Path, why: str) -> dict[str, Any]:
    """The row of an input that cannot be read: its name and why, no prediction."""
    return {"file": str(file), "error": why}


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
        return read_card(read_card_json(sidecar), str(sidecar))
    except ModelCardFormatError as exc:
        raise PredictError(str(exc)) from exc


def load_predictor(path: str | Path, threads: int | None = None) -> Predictor:
    """A :class:`Predictor` for a ``.ckpt`` checkpoint, an ``.onnx``, a TorchScript ``.pt`` or
    an ExecuTorch ``.pte``. An exported model is checked against its sidecar's card (input,
    classes); a file its reader refuses is an :class:`~fersuite.errors.UntrustedFileError`."""
    p = Path(path)
    if not p.is_file():
        kinds = ", ".join(Path(name).suffix for name in FILES.values())
        raise PredictError(f"ckpt_path={p}: file not found (a .ckpt, {kinds})")
    fmt = exported_format(p)
    if fmt == "onnx":
        from fersuite.deploy.onnx import OnnxModel

        card = read_sidecar(p)
        return Predictor(run=OnnxModel(p, threads, card=card), card=card, source=str(p))
    if fmt == "torchscript":
        card = read_sidecar(p)
        try:
            runner = TorchScriptModel(p)
        except ExportError as exc:  # a refused program: the file, not an export, is at fault
            raise UntrustedFileError(str(exc)) from exc
        return Predictor(run=runner, card=card, source=str(p))
    if fmt == "executorch":
        from fersuite.deploy.executorch import ExecuTorchModel

        card = read_sidecar(p)
        return Predictor(run=ExecuTorchModel(p, threads, card=card), card=card, source=str(p))

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


def find_broken(
    inputs: Sequence[str | Path], suffixes: Sequence[str] = IMAGE_SUFFIXES
) -> list[tuple[Path, str]]:
    """(entry, why) for what the folders among ``inputs`` hold under an input's name (one of
    ``suffixes``) but cannot be read as a file: a broken symbolic link, a FIFO, a socket or a
    device. The folder search of :func:`find_images` skips them; nothing is opened here."""
    broken: list[tuple[Path, str]] = []
    for item in inputs:
        p = Path(item)
        if not p.is_dir():
            continue
        for f in sorted(p.rglob("*")):
            if f.suffix.lower() not in suffixes or f.is_file() or f.is_dir():
                continue
            if f.is_symlink():
                broken.append((f, "broken symbolic link (its target does not exist)"))
            else:
                broken.append((f, "not a regular file"))
    return broken


def _batches(files: Sequence[Path], size: int) -> Iterator[list[Path]]:
    for i in range(0, len(files), size):
        yield list(files[i : i + size])


def predict_files(
    predictor: Predictor,
    files: Sequence[Path],
    batch_size: int = 32,
    face_crop: FaceCrop | None = None,
    detector: Any = None,
    on_error: str = "stop",
) -> list[dict[str, Any]]:
    """One row per file: expression, confidence, ``prob_<class>``, valence/arousal (when the
    model was trained with them) and, with a ``detector``, ``face_found`` plus the face
    columns (``face``: found | no_face | precropped, ``face_box`` "x y w h", ``face_score``).
    An image where the detector found no face is not guessed at: its row holds the file and
    the face columns only (``face=no_face``), no expression.

    ``face_crop`` overrides the card's (e.g. a detector chosen on the command line). A file
    that cannot be decoded raises :class:`InputError` (``on_error="stop"``) or, with
    ``on_error="continue"``, gets an :func:`error_row` in its place and the others go on."""

    if on_error not in ON_ERROR:
        raise PredictError(f"on_error={on_error!r}; expected one of {'|'.join(ON_ERROR)}")
    card = predictor.card
    tf = input_transform(card)
    rows: list[dict[str, Any]] = []
    chunks = list(_batches(files, batch_size))
    for chunk in track(chunks, f"predicting {len(files)} images"):
        tensors = []
        found: dict[Path, bool] = {}
        faces: dict[Path, dict[str, Any]] = {}
        failed: dict[Path, str] = {}
        for f in chunk:
            try:
                x, ok = load_input(card, f, detector, face_crop=face_crop, transform=tf)
            except ImageReadError as exc:
                if on_error == "stop":
                    raise InputError(str(f), str(exc)) from exc
                failed[f] = str(exc)
                continue
            found[f] = ok
            if hasattr(detector, "columns"):
                faces[f] = dict(detector.columns())
            if faces.get(f, {}).get("face") == "no_face":
                continue  # nothing to predict on: no centre-crop guess
            tensors.append(x)
        if tensors:
            with torch.inference_mode():
                out = predictor.run(torch.stack(tensors).float())
            probs = torch.as_tensor(out.expression).float().softmax(dim=1)
            valence = torch.as_tensor(out.valence).float()
            arousal = torch.as_tensor(out.arousal).float()
        i = 0
        for f in chunk:
            if f in failed:
                rows.append(error_row(f, failed[f]))
                continue
            if faces.get(f, {}).get("face") == "no_face":
                rows.append({"file": str(f), "face_found": False, **faces[f]})
                continue
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
                row["face_found"] = found[f]
                row.update(faces.get(f, {}))
            rows.append(row)
            i += 1
    return rows


def choose_face_crop(
    card: ModelCard,
    face_detector: str | None = None,
    model: str | None = None,
    margin: float | None = None,
    score_threshold: float | None = None,
) -> tuple[FaceCrop | None, Any]:
    """(face crop overriding the card's, or None; detector) for fersuite-predict's face_* keys.

    ``face_detector=None`` follows the card: a model trained on detector crops gets that
    detector (yunet/haar need ``model``); any other (faces cut whole, centre squares, listed
    boxes) gets the default detector (mtcnn), with the card's rule for already-cut faces: an
    image no larger than :meth:`FaceCrop.precropped_limit` (twice the crop size) is taken
    whole as in training, a larger one is searched. ``none`` takes the centre square; a
    detector named here searches every image (the card's rule if it is the card's detector).
    ``margin`` and ``score_threshold`` default to the card's (for the same detector; ``box``:
    its margin), else 0.2 and the detector's default. The detector is a
    :class:`fersuite.data.faces.FaceFinder`: ``.columns()`` is the last image's face."""
    crop = card.face_crop
    if face_detector == "none":
        return FaceCrop(kind="center", exif=crop.exif), None
    auto = not face_detector
    name = face_detector or (crop.detector if crop.kind == "detector" else faces.DEFAULT_DETECTOR)
    same = crop.kind == "detector" and crop.detector == name
    if margin is None:
        margin = crop.margin if same or (auto and crop.kind == "box") else 0.2
    if score_threshold is None:
        score_threshold = (crop.score_threshold if same else None) or faces.DEFAULT_SCORE.get(
            str(name), 0.6
        )
    if not 0.0 <= float(margin) <= 2.0:
        raise PredictError(f"face_margin={margin}; expected a fraction in [0, 2]")
    try:
        detector = faces.make_detector(str(name), model, float(score_threshold))
    except ValueError as exc:  # ConfigError: names the data.* key it checks
        text = str(exc).replace("data.face_", "face_")
        if auto and crop.kind == "detector":
            text = f"the model card says faces were cut with {name}: {text} (or face_detector=none)"
        elif auto:
            text = f"{text} (or face_detector=none: the centre square)"
        raise PredictError(text) from exc
    limit = crop.precropped_limit(card.crop_size) if auto or same else 0
    chosen = replace(  # the card's EXIF and crop size
        crop,
        kind="detector",
        margin=float(margin),
        detector=name,
        score_threshold=float(score_threshold),
        precropped_max_side=limit,
    )
    return chosen, faces.FaceFinder(detector, limit)  # type: ignore[arg-type]


def write_predictions(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """``.csv`` or ``.json`` (a list of rows), written atomically. Columns: every column any
    row has, in order of appearance, then ``error`` (empty, JSON null, for a predicted row;
    an unreadable input's row has only ``file`` and ``error``)."""

    out = Path(path)
    columns = [c for c in dict.fromkeys(c for r in rows for c in r) if c != "error"]
    columns = [*(columns or ["file"]), "error"]
    if out.suffix.lower() == ".json":
        atomic_write_json(out, [{**row, "error": row.get("error")} for row in rows])
    elif out.suffix.lower() == ".csv":
        write_csv(out, rows, columns)
    else:
        raise PredictError(f"output={out}: expected a .csv or .json file name (or null)")
    return out


def print_predictions(rows: Sequence[dict[str, Any]], limit: int = 50) -> None:
    """The first ``limit`` rows as a table; an unreadable input shows its error."""

    good = [r for r in rows if not r.get("error") and "expression" in r]
    bad = sum(1 for r in rows if r.get("error"))
    title = f"fersuite predictions ({len(rows)} images" + (f", {bad} unreadable)" if bad else ")")
    table = Table(title=title)
    for col in ("file", "expression"):
        table.add_column(col)
    table.add_column("confidence", justify="right")
    has_va = bool(good) and "valence" in good[0]
    if has_va:
        table.add_column("valence", justify="right")
        table.add_column("arousal", justify="right")
    has_face = any("face_found" in r for r in rows)
    if has_face:
        table.add_column("face")
    width = 3 + 2 * has_va + has_face
    for row in rows[:limit]:
        name = escape(Path(row["file"]).name)
        if row.get("error"):
            why = escape(str(row["error"]))
            table.add_row(name, f"[red]unreadable: {why}[/red]", *[""] * (width - 2))
            continue
        if "expression" not in row:  # the detector found no face: nothing was predicted
            table.add_row(name, "[yellow]no face found[/yellow]", *[""] * (width - 2))
            continue
        cells = [name, row["expression"], f"{row['confidence']:.3f}"]
        if has_va:
            cells += [f"{row['valence']:+.3f}", f"{row['arousal']:+.3f}"]
        if has_face:
            cells.append(str(row.get("face") or ("found" if row["face_found"] else "centre crop")))
        table.add_row(*cells)
    console = make_console()
    console.print(table)
    if len(rows) > limit:
        console.print(f"... and {len(rows) - limit} more (see the output file)")
