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

Arguments use Hydra's ``key=value`` syntax (parsed with OmegaConf); keys: ckpt_path, inputs,
output, batch_size, threads, face_detector (null: the model card's), face_detector_model,
face_margin and face_score_threshold (null: the card's, else 0.2 and 0.6).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import torch

from fersuite.inference import (
    PredictError,
    choose_face_crop,
    find_images,
    load_predictor,
    predict_files,
    print_predictions,
    write_predictions,
)

DEFAULTS: dict[str, Any] = {
    "ckpt_path": None,
    "inputs": None,
    "output": "predictions.csv",
    "batch_size": 32,
    "threads": None,
    "face_detector": None,
    "face_detector_model": None,
    "face_margin": None,
    "face_score_threshold": None,
}


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
