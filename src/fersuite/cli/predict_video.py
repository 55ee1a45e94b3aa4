"""The video half of ``fersuite-predict``: its keys, inputs that are videos or cameras, the
progress bar, the per-video trace plots and annotated videos, and the printed summary (the
work itself is :mod:`fersuite.video`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from fersuite.cli._args import Key
from fersuite.errors import PredictError
from fersuite.inference import IMAGE_SUFFIXES, Predictor, write_predictions
from fersuite.reporting.tables import write_csv
from fersuite.utils.console import make_console
from fersuite.video.reader import VIDEO_SUFFIXES, FrameSampling, VideoReader, is_video
from fersuite.video.run import VideoResult, VideoSettings, predict_video
from fersuite.video.smoothing import SmoothingSettings
from fersuite.video.trace import plot_trace

__all__ = ["VIDEO_KEYS", "find_inputs", "predict_videos", "video_settings", "write_rows"]

VIDEO_KEYS = [
    Key("smoothing", "one_euro", "videos: none | ema | one_euro, per face (probs and V/A)"),
    Key("ema_alpha", 0.3, "smoothing=ema: weight of the newest frame, in (0, 1]"),
    Key("one_euro_min_cutoff", 1.0, "smoothing=one_euro: cutoff (Hz) of a still signal"),
    Key("one_euro_beta", 0.05, "smoothing=one_euro: cutoff increase per unit/s of speed"),
    Key("frame_stride", 1, "videos: every N-th frame"),
    Key("max_fps", None, "videos: at most this many frames per second (null: all)"),
    Key("max_frames", None, "videos: stop after this many frames (null: no limit)"),
    Key("max_seconds", None, "videos: stop after this many seconds (null: no limit)"),
    Key("video_out", None, "annotated video (.mp4/.avi; a folder for several videos)"),
    Key("traces", None, "folder for the <video>.trace.png plots (null: beside output)"),
]


def find_inputs(inputs: Sequence[str]) -> tuple[list[Path], list[str]]:
    """(image files, videos) named by ``inputs``: files as given (by suffix), ``camera:N``,
    folders searched recursively for both."""
    images: list[Path] = []
    videos: list[str] = []
    for item in inputs:
        p = Path(item)
        if item.startswith("camera:"):
            videos.append(item)
        elif p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file())
            imgs = [f for f in found if f.suffix.lower() in IMAGE_SUFFIXES]
            vids = [str(f) for f in found if f.suffix.lower() in VIDEO_SUFFIXES]
            if not imgs and not vids:
                kinds = "/".join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)
                raise PredictError(f"inputs: folder {p} holds no {kinds} files")
            images += imgs
            videos += vids
        elif p.is_file() and is_video(p):
            videos.append(item)
        elif p.is_file():
            images.append(p)
        else:
            raise PredictError(f"inputs: {p} does not exist")
    return images, videos


def video_settings(cfg: dict[str, Any], face_crop: Any, detector: Any) -> VideoSettings:
    """The video keys of ``cfg`` checked (one line naming a bad key)."""
    smoothing = SmoothingSettings(
        kind=str(cfg["smoothing"] or "none"),
        ema_alpha=cfg["ema_alpha"],
        one_euro_min_cutoff=cfg["one_euro_min_cutoff"],
        one_euro_beta=cfg["one_euro_beta"],
    )
    sampling = FrameSampling(
        cfg["frame_stride"], cfg["max_fps"], cfg["max_frames"], cfg["max_seconds"]
    )
    return VideoSettings(sampling, smoothing, cfg["batch_size"], face_crop, detector)


def _name(source: str) -> str:
    return source.replace(":", "") if source.startswith("camera:") else Path(source).stem


def _video_out(cfg: dict[str, Any], source: str, several: bool) -> Path | None:
    if not cfg["video_out"]:
        return None
    out = Path(str(cfg["video_out"]))
    if out.suffix:
        if several:
            raise PredictError(
                f"video_out={out} names one file but several videos were given; "
                "name a folder instead"
            )
        return out
    return out / f"{_name(source)}.annotated.mp4"


def _progress(console: Any) -> Any:

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[fps]:.1f} frames/s"),
        console=console,
        disable=not console.is_terminal,
        transient=True,
    )


def predict_videos(
    predictor: Predictor, videos: Sequence[str], settings: VideoSettings, cfg: dict[str, Any]
) -> list[VideoResult]:
    """Every video: rows, trace PNG, annotated video; prints one summary line each."""

    console = make_console()
    out = Path(str(cfg["output"])) if cfg["output"] else None
    trace_dir = Path(str(cfg["traces"])) if cfg["traces"] else (out.parent if out else Path("."))
    results: list[VideoResult] = []
    with _progress(console) as bar:
        for source in videos:
            task = bar.add_task(_name(source), total=None, fps=0.0)
            start = time.perf_counter()

            def tick(reader: VideoReader, task: Any = task, start: float = start) -> None:
                total = None
                if reader.frame_count:
                    total = -(-reader.frame_count // reader.step)
                    if settings.sampling.max_frames:
                        total = min(total, settings.sampling.max_frames)
                rate = reader.yielded / max(time.perf_counter() - start, 1e-9)
                bar.update(task, completed=reader.yielded, total=total, fps=rate)

            result = predict_video(
                predictor, source, settings, _video_out(cfg, source, len(videos) > 1), tick
            )
            bar.remove_task(task)
            results.append(result)
            trace = None
            if result.rows:
                trace = plot_trace(
                    result.rows,
                    trace_dir / f"{_name(source)}.trace.png",
                    predictor.class_names,
                    f"{source} ({predictor.card.arch}, smoothing={settings.smoothing.kind})",
                )
            line = (
                f"{source}: {result.frames} frames at {result.fps:.3g} fps -> "
                f"{len(result.rows)} face rows in {result.seconds:.2f} s "
                f"({result.frames_per_second:.1f} frames/s)"
            )
            if result.frames_without_face:
                line += f"; {result.frames_without_face} frames without a face"
            console.print(line, highlight=False)
            for what, path in (("trace", trace), ("annotated video", result.video_out)):
                if path is not None:
                    console.print(f"  {what}: {path}", highlight=False)
            if result.interrupted:
                console.print(f"  stopped by Ctrl-C after {result.frames} frames", style="yellow")
            if result.interrupted:
                break
    frames = sum(r.frames for r in results)
    seconds = sum(r.seconds for r in results)
    if len(results) > 1:
        console.print(
            f"videos: {frames} frames in {seconds:.2f} s ({frames / max(seconds, 1e-9):.1f} "
            "frames/s)",
            highlight=False,
        )
    return results


def write_rows(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """``.csv`` (every column any row has, in order of appearance) or ``.json``, atomically."""

    out = Path(path)
    if out.suffix.lower() != ".csv" or not rows:
        return write_predictions(out, rows)
    columns = list(dict.fromkeys(c for r in rows for c in r))
    write_csv(out, rows, columns)
    return out
