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
size, mean/std). The face is found by a detector (:func:`fersuite.inference.choose_face_crop`):
by default the card's, else MTCNN (bundled) for a model trained on cut faces, which takes an
image no larger than twice its crop size as an already-cut face; ``face_detector=none``: the
centre square.

Videos (:mod:`fersuite.video`): per processed frame the faces (the detector's, tracked with a
``face_id``; else the centre square, ``face_id`` 0) go through the same cut and transform
(:func:`fersuite.card.frame_input`); probabilities and valence/arousal are smoothed per face
(``smoothing``). Each video gets a ``<name>.trace.png`` and, with ``video_out``, an annotated
video. Ctrl-C stops a camera and keeps everything so far.

Writes ``output`` (``predictions.csv`` by default; ``.json``, or ``null``): images ``file,
expression, confidence, prob_<class>`` (+ ``valence, arousal``); video frames also ``frame,
time_s, face_id, box`` and the ``*_smooth`` columns; last ``error``. ``--help`` lists the keys
(:data:`KEYS`).

An input that cannot be read (a corrupt, truncated or too large image, a broken link in a
folder, a named path that does not exist, an unreadable video, a missing camera) gets one line
``fersuite-predict: <file>: <why>`` on stderr and, with ``on_error=continue`` (the default), a
row with only ``file`` and ``error``; every other input is predicted and written, and the exit
status is 2. A truncated video keeps its frames' rows and gets the line. When no input could be
read nothing is written. ``on_error=stop`` stops at the first: its line, exit status 2, and
``output`` not written (a previous file is left as it was).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import torch

from fersuite.apps import run_app
from fersuite.cli._args import Key, help_text, parse_keys, wants_help
from fersuite.cli.predict_video import (
    VIDEO_KEYS,
    _video_out,
    find_inputs,
    predict_videos,
    video_settings,
)
from fersuite.errors import (
    InputError,
    PredictError,
    PretrainedWeightsError,
    UntrustedFileError,
    VideoReadError,
)
from fersuite.inference import (
    IMAGE_SUFFIXES,
    ON_ERROR,
    Predictor,
    choose_face_crop,
    error_row,
    find_broken,
    load_predictor,
    predict_files,
    print_predictions,
    write_predictions,
)
from fersuite.utils.console import make_console
from fersuite.video.reader import VIDEO_SUFFIXES
from fersuite.video.run import VideoResult

KEYS = [
    Key("ckpt_path", None, "fersuite-train .ckpt, or exported .onnx/.pte/.pt (with model.json)"),
    Key("inputs", None, "image/video file, folder or camera:N, or a list [a.png,clip.mp4]"),
    Key("output", "predictions.csv", "predictions file (.csv or .json; null: none)"),
    Key("batch_size", 32, "images (video: faces across frames) per forward pass"),
    Key("threads", None, "CPU threads (null: torch's default)"),
    Key("face_detector", None, "null (see Faces) | mtcnn | yunet | haar | none (centre square)"),
    Key("face_detector_model", None, "YuNet .onnx model file (face_detector=yunet)"),
    Key("face_margin", None, "detector box widened by this fraction (null: card's, else 0.2)"),
    Key("face_score_threshold", None, "detector score (null: card's, else mtcnn 0.9, others 0.6)"),
    Key("on_error", "continue", "an unreadable input: continue (error row) | stop (write none)"),
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
    "time_s, face_id, box and *_smooth columns, a <video>.trace.png and (video_out) a video.\n"
    "An input that cannot be read: one line 'fersuite-predict: <file>: <why>' on stderr and a\n"
    "row with its error (error column), the others are predicted and written; exit status 2.\n"
    "on_error=stop: stop at the first, exit status 2, output not written.\n"
    "Faces: face_detector=null uses the model card's detector, else MTCNN (bundled, no model\n"
    "file); an image no longer than twice the model's crop size a side (the card's\n"
    "face_crop.precropped_max_side) is taken as an already-cut face, used whole as in training\n"
    "(FER2013, RAF-DB, synthetic faces). A detector named here searches every image; the face\n"
    "box is widened by face_margin and turned so the eyes are level (mtcnn landmarks).",
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
    output = cfg["output"]
    if output and Path(str(output)).suffix.lower() not in (".csv", ".json"):
        raise PredictError(f"output={output}: expected a .csv or .json file name (or null)")
    if cfg["on_error"] not in ON_ERROR:
        raise PredictError(f"on_error={cfg['on_error']!r}; expected one of {'|'.join(ON_ERROR)}")
    return cfg


class InputsFailedError(PredictError):
    """Inputs that could not be read, each already named on stderr; the rest were written."""

    def __init__(self, failed: Sequence[tuple[str, str]]) -> None:
        super().__init__(f"{len(failed)} inputs could not be read")
        self.failed = list(failed)


def _why(message: str, name: str) -> str:
    """A reader's message without its own ``inputs: <name>`` / ``video <name>:`` prefix."""
    for prefix in (
        f"inputs: folder {name} ",
        f"inputs: {name} ",
        f"inputs={name}: ",
        f"video {name}: ",
    ):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


def _find(inputs: Sequence[str], stop: bool) -> tuple[list[Path], list[str], list[dict[str, Any]]]:
    """(images, videos, error rows) of ``inputs``: each named path on its own, so that one that
    does not exist (or an empty folder) is a bad input, not the end of the run."""
    images: list[Path] = []
    videos: list[str] = []
    bad: list[dict[str, Any]] = []
    for item in inputs:
        try:
            imgs, vids = find_inputs([item])
        except PredictError as exc:
            if stop:
                raise InputError(item, _why(str(exc), item)) from exc
            bad.append(error_row(item, _why(str(exc), item)))
            continue
        images += imgs
        videos += vids
    for f, why in find_broken(inputs, IMAGE_SUFFIXES + VIDEO_SUFFIXES):
        if stop:
            raise InputError(str(f), why)
        bad.append(error_row(f, why))
    return images, videos, bad


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """OpenCV logs errors only (a file it cannot open is not also a ``[ WARN ]`` line)."""

    log = cv2.utils.logging
    level = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        log.setLogLevel(level)


def _videos(
    predictor: Predictor, videos: Sequence[str], settings: Any, cfg: dict[str, Any], stop: bool
) -> tuple[list[VideoResult], list[dict[str, Any]], list[tuple[str, str]]]:
    """(results, rows, failures) of each video on its own: a video that cannot be read is an
    error row (or, ``stop``, the end), the others go on; a truncated one keeps its rows."""

    several = len(videos) > 1
    results: list[VideoResult] = []
    rows: list[dict[str, Any]] = []
    failed: list[tuple[str, str]] = []
    for source in videos:
        out = _video_out(cfg, source, several)
        one = {**cfg, "video_out": None if out is None else str(out)}
        try:
            with _quiet_opencv():  # the line below says it, not OpenCV's warnings
                (result,) = predict_videos(predictor, [source], settings, one)
        except VideoReadError as exc:
            why = _why(str(exc), source)
            if stop:
                raise InputError(source, why) from exc
            rows.append(error_row(source, why))
            failed.append((source, why))
            continue
        results.append(result)
        rows += result.rows
        if result.stopped:  # everything read is kept; the input was still bad
            why = _why(result.stopped, source)
            if stop:
                raise InputError(source, why)
            failed.append((source, why))
        if result.interrupted:
            break
    if len(results) > 1:
        frames = sum(r.frames for r in results)
        seconds = sum(r.seconds for r in results)
        make_console().print(
            f"videos: {frames} frames in {seconds:.2f} s ({frames / max(seconds, 1e-9):.1f} "
            "frames/s)",
            highlight=False,
        )
    return results, rows, failed


def run(argv: Sequence[str]) -> list[dict[str, Any]]:
    """Predict every input of ``argv`` and write ``output``; the rows. An unreadable input:
    see the module docstring (:class:`InputError` with ``on_error=stop``, else
    :class:`InputsFailedError` after the others were written)."""

    cfg = parse_args(argv)
    stop = cfg["on_error"] == "stop"
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
    images, videos, bad = _find(cfg["inputs"], stop)
    if len(videos) > 1:
        _video_out(cfg, videos[0], True)  # video_out naming one file: refused before any work
    on_error = cfg["on_error"]
    rows = predict_files(predictor, images, cfg["batch_size"], face_crop, detector, on_error)
    rows += bad
    if rows:
        print_predictions(rows)
    failed = [(r["file"], r["error"]) for r in rows if r.get("error")]
    console = make_console()
    console.print(f"face crop: {(face_crop or predictor.card.face_crop).describe()}")
    if videos:
        _, video_rows, video_failed = _videos(predictor, videos, settings, cfg, stop)
        rows += video_rows
        failed += video_failed
    for file, why in failed:
        print(f"fersuite-predict: {file}: {why}", file=sys.stderr, flush=True)
    predicted = any(not r.get("error") for r in rows)
    if cfg["output"] and (predicted or not failed):
        print(f"predictions: {write_predictions(cfg['output'], rows)}")
    if failed:
        raise InputsFailedError(failed)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """The exit status of ``fersuite-predict argv...``. Without ``argv`` (the console script)
    it runs under :func:`fersuite.apps.run_app`: bad input → one line, exit 2; an input that
    cannot be read → one line each (``fersuite-predict: <file>: <why>``), the others written,
    exit 2; a failed run → traceback, exit 1."""
    if argv is None:
        run_app("predict", main, sys.argv[1:])
        return 0
    args = list(argv)
    if wants_help(args):
        print(HELP, end="")
        return 0
    try:
        run(args)
    except InputsFailedError:  # each named on stderr, the rest written
        return 2
    except InputError as exc:  # on_error=stop
        print(f"fersuite-predict: {exc}", file=sys.stderr)
        return 2
    except (PredictError, UntrustedFileError) as exc:  # a refused file names itself
        print(f"fersuite-predict: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
