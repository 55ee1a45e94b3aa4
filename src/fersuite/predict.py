"""``fersuite-predict``: expression probabilities, valence and arousal of image files.

::

    fersuite-predict ckpt_path=logs/train/runs/<time>/checkpoints/last.ckpt inputs=photos/
    fersuite-predict ckpt_path=export/model.onnx inputs=[a.png,b.jpg] output=preds.json

``ckpt_path`` is a fersuite-train checkpoint (``.ckpt``, loaded with ``weights_only=True``), an
exported ``.onnx`` (run with ONNX Runtime) or TorchScript ``.pt`` -- the last two need the
``model.json`` sidecar written beside them by ``fersuite-export``. ``inputs`` is one path or a
list of image files and folders (folders are searched recursively for png/jpg/jpeg/bmp/tif/
tiff/webp files). Every image goes through the training eval transform of the model: gray/RGB
conversion to its channels, antialiased resize to its input size, scaling to [0, 1] and the
mean/std normalisation of its checkpoint. With ``face_detector=yunet|haar`` (and
``face_detector_model=<file>``) the face is first cropped with the datasets' detector from
:mod:`fersuite.data.faces` (square box widened by ``face_margin``; the centre square when no
face is found, reported in a ``face_found`` column).

Prints a table and writes ``output`` (``predictions.csv`` by default; ``.json`` for JSON, or
``null`` for no file): ``file``, ``expression``, ``confidence``, ``prob_<class>`` per class and,
when the model was trained with valence/arousal, ``valence`` and ``arousal``.

Arguments use Hydra's ``key=value`` syntax (parsed with OmegaConf); keys: ckpt_path, inputs,
output, batch_size, threads, face_detector, face_detector_model, face_margin,
face_score_threshold.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fersuite.types import AffectOutput

__all__ = [
    "IMAGE_SUFFIXES",
    "PredictError",
    "Predictor",
    "find_images",
    "load_predictor",
    "main",
    "predict_files",
    "write_predictions",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
DEFAULTS: dict[str, Any] = {
    "ckpt_path": None,
    "inputs": None,
    "output": "predictions.csv",
    "batch_size": 32,
    "threads": None,
    "face_detector": "none",
    "face_detector_model": None,
    "face_margin": 0.2,
    "face_score_threshold": 0.6,
}


class PredictError(ValueError):
    """Bad input to fersuite-predict (one line naming the file or key)."""


@dataclass
class Predictor:
    """A model with everything needed to preprocess its input."""

    run: Callable[[torch.Tensor], AffectOutput]
    class_names: tuple[str, ...]
    has_va: bool
    size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------


def _read_sidecar(model_path: Path) -> dict[str, Any]:
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
    if isinstance(meta, dict) and meta.get("model_cfg") is not None:
        from fersuite.checkpoint import check_model_card

        # Never used to build anything here, but a sidecar naming code is refused outright.
        check_model_card(meta["model_cfg"], str(sidecar))
    try:
        inp = meta["input"]
        return {
            "class_names": tuple(str(c) for c in meta["class_names"]),
            "has_va": bool(meta.get("has_va", True)),
            "size": int(inp["size"]),
            "channels": int(inp["channels"]),
            "mean": tuple(float(v) for v in inp["mean"]),
            "std": tuple(float(v) for v in inp["std"]),
        }
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PredictError(
            f"{sidecar}: not a fersuite-export sidecar (needs class_names and input.size/"
            f"channels/mean/std): {type(exc).__name__}: {exc}"
        ) from exc


def load_predictor(path: str | Path, threads: int | None = None) -> Predictor:
    """A :class:`Predictor` for a ``.ckpt`` checkpoint, an ``.onnx`` or a TorchScript ``.pt``."""
    p = Path(path)
    if not p.is_file():
        raise PredictError(f"ckpt_path={p}: file not found (a .ckpt, .onnx or exported .pt)")
    suffix = p.suffix.lower()
    if suffix == ".onnx":
        from fersuite.export import OnnxModel

        meta = _read_sidecar(p)
        return Predictor(run=OnnxModel(p, threads=threads), source=str(p), **meta)
    if suffix == ".pt":
        import warnings

        meta = _read_sidecar(p)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated
            module = torch.jit.load(str(p), map_location="cpu").eval()

        def run_script(x: torch.Tensor) -> AffectOutput:
            e, v, a = module(x)
            return AffectOutput(e, v, a)

        return Predictor(run=run_script, source=str(p), **meta)

    from fersuite.checkpoint import load_model_from_checkpoint

    net, ck = load_model_from_checkpoint(p)
    return Predictor(
        run=net,
        class_names=ck.class_names,
        has_va=ck.has_va,
        size=ck.input_size,
        channels=ck.in_chans,
        mean=ck.mean,
        std=ck.std,
        source=str(p),
    )


# --------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------


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


def read_image(path: Path) -> np.ndarray:
    """uint8 (H, W) for grayscale files, (H, W, 3) otherwise (alpha dropped)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            gray = img.mode in ("1", "L", "LA", "I", "I;16", "F")
            arr = np.array(img.convert("L" if gray else "RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise PredictError(f"cannot read image {path}: {exc}") from exc
    return arr


@dataclass(frozen=True)
class FaceCrop:
    """Face cropping with a detector of :mod:`fersuite.data.faces`."""

    detector: Any
    margin: float = 0.2


def make_face_crop(
    name: str, model: str | None = None, margin: float = 0.2, score_threshold: float = 0.6
) -> FaceCrop | None:
    """The detector named by ``face_detector`` (None for ``none``); one-line errors."""
    if name == "none":
        return None
    try:
        from fersuite.data import faces
    except ImportError as exc:
        raise PredictError(
            f"face_detector={name} needs fersuite.data.faces, which this installation lacks"
        ) from exc
    if not 0.0 <= float(margin) <= 2.0:
        raise PredictError(f"face_margin={margin}; expected a fraction in [0, 2]")
    try:
        detector = faces.make_detector(name, model, float(score_threshold))
    except ValueError as exc:  # ConfigError: names the data.* key it checks
        text = str(exc).replace("data.face_", "face_")
        raise PredictError(text) from exc
    return FaceCrop(detector, float(margin))


def _load_face(path: Path, crop: FaceCrop, channels: int, size: int) -> tuple[np.ndarray, bool]:
    from fersuite.data.faces import load_face

    try:
        return load_face(
            path, "L" if channels == 1 else "RGB", size, margin=crop.margin, detector=crop.detector
        )
    except ValueError as exc:  # ImageReadError
        raise PredictError(f"cannot read image {path}: {exc}") from exc


def _batches(files: Sequence[Path], size: int) -> Iterator[list[Path]]:
    for i in range(0, len(files), size):
        yield list(files[i : i + size])


def predict_files(
    predictor: Predictor,
    files: Sequence[Path],
    batch_size: int = 32,
    face_crop: FaceCrop | None = None,
) -> list[dict[str, Any]]:
    """One row per file: expression, confidence, ``prob_<class>``, valence/arousal (when the
    model was trained with them) and, with ``face_crop``, ``face_found``."""
    from fersuite.data.transforms import build_transforms

    tf = build_transforms(
        predictor.size, predictor.channels, predictor.mean, predictor.std, train=False
    )
    rows: list[dict[str, Any]] = []
    for chunk in _batches(files, batch_size):
        tensors = []
        found: list[bool] = []
        for f in chunk:
            if face_crop is None:
                arr = read_image(f)
            else:
                arr, ok = _load_face(f, face_crop, predictor.channels, predictor.size)
                found.append(ok)
            img = torch.from_numpy(np.array(arr, copy=True))
            img = img.unsqueeze(0) if img.ndim == 2 else img.permute(2, 0, 1)
            tensors.append(tf(img))
        x = torch.stack(tensors).float()
        with torch.inference_mode():
            out = predictor.run(x)
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
            if found:
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


def print_predictions(rows: Sequence[dict[str, Any]], limit: int = 50) -> None:
    from rich.table import Table

    from fersuite.utils.console import make_console

    table = Table(title=f"fersuite predictions ({len(rows)} images)")
    table.add_column("file")
    table.add_column("expression")
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


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> dict[str, Any]:
    """``key=value`` arguments (OmegaConf dotlist syntax) merged over :data:`DEFAULTS`."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    bad = [a for a in argv if "=" not in a]
    if bad:
        raise PredictError(f"arguments must be key=value, got {bad}; keys: {list(DEFAULTS)}")
    try:
        given = OmegaConf.to_container(OmegaConf.from_dotlist(list(argv)), resolve=True)
    except OmegaConfBaseException as exc:
        raise PredictError(f"cannot parse arguments: {exc}") from exc
    assert isinstance(given, dict)
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise PredictError(f"unknown keys {unknown}; expected some of {list(DEFAULTS)}")
    cfg = {**DEFAULTS, **given}
    if not cfg["ckpt_path"]:
        raise PredictError("ckpt_path=<.ckpt | .onnx | .pt> is required")
    inputs = cfg["inputs"]
    if inputs is None or inputs == []:
        raise PredictError("inputs=<image file or folder> (or inputs=[a,b,...]) is required")
    cfg["inputs"] = [str(i) for i in inputs] if isinstance(inputs, list) else [str(inputs)]
    for key, lo in (("batch_size", 1), ("threads", 1)):
        value = cfg[key]
        if value is None and key == "threads":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise PredictError(f"{key}={value!r}; expected an integer >= {lo}")
    if not isinstance(cfg["face_margin"], int | float) or isinstance(cfg["face_margin"], bool):
        raise PredictError(f"face_margin={cfg['face_margin']!r}; expected a number")
    return cfg


def run(argv: Sequence[str]) -> list[dict[str, Any]]:
    from fersuite.export import ExportError
    from fersuite.models.weights import PretrainedWeightsError

    cfg = parse_args(argv)
    if cfg["threads"] is not None:
        torch.set_num_threads(cfg["threads"])
    try:
        predictor = load_predictor(cfg["ckpt_path"], threads=cfg["threads"])
    except (FileNotFoundError, PretrainedWeightsError, ExportError) as exc:
        raise PredictError(str(exc)) from exc
    face_crop = make_face_crop(
        str(cfg["face_detector"]),
        cfg["face_detector_model"],
        cfg["face_margin"],
        cfg["face_score_threshold"],
    )
    files = find_images(cfg["inputs"])
    rows = predict_files(predictor, files, cfg["batch_size"], face_crop)
    print_predictions(rows)
    if cfg["output"]:
        out = write_predictions(cfg["output"], rows)
        print(f"predictions: {out}")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """The exit status of ``fersuite-predict argv...``. Without ``argv`` (the console script)
    it runs under :func:`fersuite.apps.run_app`: bad input → one line, exit 2; a failed run →
    traceback, exit 1."""
    if argv is None:
        from fersuite.apps import run_app

        run_app("predict", main, sys.argv[1:])
        return 0
    args = list(argv)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return 0
    try:
        run(args)
    except PredictError as exc:
        print(f"fersuite-predict: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
