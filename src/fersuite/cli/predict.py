"""``fersuite-predict``: expression probabilities, valence and arousal of images and videos.

::

    fersuite-predict ckpt_path=logs/train/runs/<time>/checkpoints/last.ckpt inputs=photos/
    fersuite-predict ckpt_path=export/model.onnx inputs=[a.png,b.jpg] output=preds.json
    fersuite-predict ckpt_path=model.onnx inputs=clip.mp4 video_out=annotated.mp4
    fersuite-predict ckpt_path=model.ckpt inputs=camera:0 max_seconds=30

``ckpt_path`` is a fersuite-train checkpoint (``.ckpt``, loaded with ``weights_only=True``), an
exported ``.onnx`` (ONNX Runtime) or TorchScript ``.pt`` (with the ``model.json`` sidecar of
``fersuite-export``). ``inputs`` is one path or a list of image files, videos (any container
OpenCV reads), ``camera:N`` and folders (searched recursively for both). Every image is read as
the model's training data was (:func:`fersuite.card.load_input`: EXIF, face crop, channels,
size, mean/std); with ``face_detector=yunet|haar`` (+ ``face_detector_model``) the face is
found by the datasets' detector (centre square when none; ``face_found`` column).

Videos (:mod:`fersuite.video`): per processed frame the faces (the detector's, tracked with a
``face_id``; else the centre square, ``face_id`` 0) go through the same cut and transform
(:func:`fersuite.card.frame_input`); probabilities and valence/arousal are smoothed per face
(``smoothing``). Each video gets a ``<name>.trace.png`` and, with ``video_out``, an annotated
video. Ctrl-C stops a camera and keeps everything so far.

Writes ``output`` (``predictions.csv`` by default; ``.json``, or ``null``): images ``file,
expression, confidence, prob_<class>`` (+ ``valence, arousal``); video frames also ``frame,
time_s, face_id, box`` and the ``*_smooth`` columns. ``--help`` lists the keys (:data:`KEYS`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import torch

from fersuite.cli._args import Key, help_text, parse_keys, wants_help
from fersuite.errors import UntrustedFileError
from fersuite.inference import (
    PredictError,
    choose_face_crop,
    load_predictor,
    predict_files,
    print_predictions,
)
from fersuite.video.app import VIDEO_KEYS, find_inputs, predict_videos, video_settings, write_rows

KEYS = [
    Key("ckpt_path", None, "fersuite-train .ckpt, or exported .onnx / .pt (with model.json)"),
    Key("inputs", None, "image/video file, folder or camera:N, or a list [a.png,clip.mp4]"),
    Key("output", "predictions.csv", "predictions file (.csv or .json; null: none)"),
    Key("batch_size", 32, "images (video: faces across frames) per forward pass"),
    Key("threads", None, "CPU threads (null: torch's default)"),
    Key("face_detector", None, "none (centre square) | yunet | haar (null: model card's crop)"),
    Key("face_detector_model", None, "YuNet .onnx model file (face_detector=yunet)"),
    Key("face_margin", None, "detector box widened by this fraction (null: card's, else 0.2)"),
    Key("face_score_threshold", None, "detector score threshold (null: card's, else 0.6)"),
    *VIDEO_KEYS,
]
DEFAULTS: dict[str, Any] = {k.name: k.default for k in KEYS}
HELP = help_text(
    "fersuite-predict",
    "Expression probabilities, valence and arousal of images, videos and cameras.",
    ["fersuite-predict ckpt_path=<.ckpt|.onnx|.pt> inputs=<file|folder|camera:N|[a,b]> [k=v ...]"],
    KEYS,
    "Each image is read as the model's training data was (its model card: EXIF orientation,\n"
    "face crop, channels, size, mean/std). Columns: file, expression, confidence, prob_<class>\n"
    "and, for a model trained with valence/arousal, valence and arousal; video rows add frame,\n"
    "time_s, face_id, box and *_smooth columns, a <video>.trace.png and (video_out) a video.",
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
    from fersuite.models.weights import PretrainedWeightsError
    from fersuite.utils.console import make_console

    cfg = parse_args(argv)
    if cfg["threads"] is not None:
        torch.set_num_threads(cfg["threads"])
    try:
        predictor = load_predictor(cfg["ckpt_path"], threads=cfg["threads"])
    except (FileNotFoundError, PretrainedWeightsError) as exc:
        raise PredictError(str(exc)) from exc
    face_crop, detector = choose_face_crop(
        predictor.card,
        cfg["face_detector"],
        cfg["face_detector_model"],
        cfg["face_margin"],
        cfg["face_score_threshold"],
    )
    settings = video_settings(cfg, face_crop, detector)
    images, videos = find_inputs(cfg["inputs"])
    rows = predict_files(predictor, images, cfg["batch_size"], face_crop, detector)
    if images:
        print_predictions(rows)
    console = make_console()
    console.print(f"face crop: {(face_crop or predictor.card.face_crop).describe()}")
    results = predict_videos(predictor, videos, settings, cfg) if videos else []
    rows += [row for r in results for row in r.rows]
    if cfg["output"]:
        print(f"predictions: {write_rows(cfg['output'], rows)}")
    stopped = [r.stopped for r in results if r.stopped]
    if stopped:  # everything read is written; the input was still bad
        raise PredictError("; ".join(stopped))
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
    except (PredictError, UntrustedFileError) as exc:  # a refused file names itself
        print(f"fersuite-predict: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
