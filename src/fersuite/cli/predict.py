"""``fersuite-predict``: expression probabilities, valence and arousal of image files.

::

    fersuite-predict ckpt_path=logs/train/runs/<time>/checkpoints/last.ckpt inputs=photos/
    fersuite-predict ckpt_path=export/model.onnx inputs=[a.png,b.jpg] output=preds.json

``ckpt_path`` is a fersuite-train checkpoint (``.ckpt``, loaded with ``weights_only=True``), an
exported ``.onnx`` (run with ONNX Runtime) or TorchScript ``.pt`` -- the last two need the
``model.json`` sidecar written beside them by ``fersuite-export``. ``inputs`` is one path or a
list of image files and folders (folders are searched recursively for png/jpg/jpeg/bmp/tif/
tiff/webp files). Every image is read as the model's training data was (its model card,
:func:`fersuite.card.load_input`): EXIF orientation applied, the face cut as in training (the
centre square for ``data=folder``, FER2013, RAF-DB and AffectNet without a box), resized, then
gray/RGB conversion to its channels, resize to its input size, scaling to [0, 1] and its
mean/std. With ``face_detector=yunet|haar`` (and ``face_detector_model=<file>``) the face is
found by the datasets' detector (:mod:`fersuite.data.faces`; square box widened by
``face_margin``; the centre square when none is found, reported in a ``face_found`` column).
A model trained on detector crops needs ``face_detector_model`` (or ``face_detector=none``).

Prints a table and writes ``output`` (``predictions.csv`` by default; ``.json`` for JSON, or
``null`` for no file): ``file``, ``expression``, ``confidence``, ``prob_<class>`` per class and,
when the model was trained with valence/arousal, ``valence`` and ``arousal``.

Arguments use Hydra's ``key=value`` syntax (:mod:`fersuite.cli._args`); ``--help`` lists the
keys (:data:`KEYS`) with their defaults.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import torch

from fersuite.cli._args import Key, help_text, parse_keys, wants_help
from fersuite.inference import (
    PredictError,
    choose_face_crop,
    find_images,
    load_predictor,
    predict_files,
    print_predictions,
    write_predictions,
)

KEYS = [
    Key("ckpt_path", None, "fersuite-train .ckpt, or exported .onnx / .pt (with model.json)"),
    Key("inputs", None, "image file or folder, or a list [a.png,photos/]"),
    Key("output", "predictions.csv", "predictions file (.csv or .json; null: none)"),
    Key("batch_size", 32, "images per forward pass"),
    Key("threads", None, "CPU threads (null: torch's default)"),
    Key("face_detector", None, "none (centre square) | yunet | haar (null: model card's crop)"),
    Key("face_detector_model", None, "YuNet .onnx model file (face_detector=yunet)"),
    Key("face_margin", None, "detector box widened by this fraction (null: card's, else 0.2)"),
    Key("face_score_threshold", None, "detector score threshold (null: card's, else 0.6)"),
]
DEFAULTS: dict[str, Any] = {k.name: k.default for k in KEYS}
HELP = help_text(
    "fersuite-predict",
    "Expression probabilities, valence and arousal of image files.",
    ["fersuite-predict ckpt_path=<.ckpt|.onnx|.pt> inputs=<file|folder|[a,b]> [key=value ...]"],
    KEYS,
    "Each image is read as the model's training data was (its model card: EXIF orientation,\n"
    "face crop, channels, size, mean/std). Columns: file, expression, confidence, prob_<class>\n"
    "and, for a model trained with valence/arousal, valence and arousal.",
)


def parse_args(argv: Sequence[str]) -> dict[str, Any]:
    """``key=value`` arguments (OmegaConf dotlist syntax) merged over :data:`DEFAULTS`."""
    cfg = parse_keys(argv, KEYS, PredictError)
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
    for key in ("face_margin", "face_score_threshold"):
        value = cfg[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise PredictError(f"{key}={value!r}; expected a number")
    return cfg


def run(argv: Sequence[str]) -> list[dict[str, Any]]:
    from fersuite.deploy.base import ExportError
    from fersuite.models.weights import PretrainedWeightsError
    from fersuite.utils.console import make_console

    cfg = parse_args(argv)
    if cfg["threads"] is not None:
        torch.set_num_threads(cfg["threads"])
    try:
        predictor = load_predictor(cfg["ckpt_path"], threads=cfg["threads"])
    except (FileNotFoundError, PretrainedWeightsError, ExportError) as exc:
        raise PredictError(str(exc)) from exc
    face_crop, detector = choose_face_crop(
        predictor.card,
        cfg["face_detector"],
        cfg["face_detector_model"],
        cfg["face_margin"],
        cfg["face_score_threshold"],
    )
    files = find_images(cfg["inputs"])
    rows = predict_files(predictor, files, cfg["batch_size"], face_crop, detector)
    print_predictions(rows)
    make_console().print(f"face crop: {(face_crop or predictor.card.face_crop).describe()}")
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
    if wants_help(args):
        print(HELP, end="")
        return 0
    try:
        run(args)
    except PredictError as exc:
        print(f"fersuite-predict: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
