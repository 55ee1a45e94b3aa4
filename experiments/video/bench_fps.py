"""Frames/s of fersuite-predict's video path (read, centre crop, transform, model, smoothing)
for the lightweight CNN (48×48 gray) and MiT-FER b0 (48×48 gray), eager and ONNX, 1 and 2
threads, on a synthetic 64×64 clip. Random weights (speed does not depend on them).

    PYTHONPATH=src python experiments/video/bench_fps.py [--frames 200]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from tests.export.helpers import ZOO, make_checkpoint
from tests.video.helpers import switch_frames, write_video

from fersuite.deploy.exporter import ExportSettings, export_checkpoint
from fersuite.inference import load_predictor
from fersuite.video import VideoSettings, predict_video


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=200)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="video_bench_"))
    frames, _ = switch_frames(args.frames)
    clip = write_video(root / "clip.mp4", frames, fps=30)
    print("| model | runtime | threads | frames/s |\n|---|---|---|---|")
    for name in ("lightweight_cnn", "mit_fer"):
        ckpt, _ = make_checkpoint(root / f"{name}.ckpt", ZOO[name])
        exporter = "legacy" if name == "lightweight_cnn" else "dynamo"  # MiT: adaptive pool
        fast = ExportSettings(latency_runs=0, verify_faces=2, exporter=exporter)
        export_checkpoint(ckpt, fast, root / name)
        for runtime, path in (("eager", ckpt), ("onnx", root / name / "model.onnx")):
            for threads in (1, 2):
                torch.set_num_threads(threads)
                pred = load_predictor(path, threads=threads)
                predict_video(pred, str(clip), VideoSettings())  # warm-up
                r = predict_video(pred, str(clip), VideoSettings())
                print(f"| {name} | {runtime} | {threads} | {r.frames_per_second:.0f} |", flush=True)


if __name__ == "__main__":
    main()
