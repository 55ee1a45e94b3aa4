"""fersuite-predict on videos: a tiny trained model follows an expression switch, smoothing
steadies valence, the annotated video has the processed frames, bad videos get one line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.video.helpers import PAIR, switch_frames, train_pair_model, write_video

from fersuite.cli.predict import HELP, main, run
from fersuite.data.faces import Box
from fersuite.inference import load_predictor
from fersuite.video import SmoothingSettings, VideoSettings, predict_video

N = 20


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("video")
    frames, _ = switch_frames(N)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {
        "root": root,
        "ckpt": train_pair_model(root / "m.ckpt"),
        "avi": write_video(root / "clip.avi", frames),
        "mp4": write_video(root / "clip.mp4", frames),
    }
    torch.set_num_threads(threads)


def _frames(path: Path) -> tuple[int, float]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    return n, float(cap.get(cv2.CAP_PROP_FPS))


def test_predictions_follow_the_expression_switch(clip: dict[str, Path]) -> None:
    # the model is trained for seconds on PAIR (happy vs sad; they differ most in the
    # synthetic faces' geometry and in valence); every frame is a new, unseen face
    pred = load_predictor(clip["ckpt"])
    rows = predict_video(pred, clip["mp4"], VideoSettings(batch_size=7)).rows
    assert [r["frame"] for r in rows] == list(range(N))
    first, second = rows[: N // 2], rows[N // 2 :]
    happy, sad = PAIR
    assert sum(r["expression"] == happy for r in first) >= 0.8 * len(first)
    mean = lambda rs, k: float(np.mean([r[k] for r in rs]))  # noqa: E731
    assert mean(second, f"prob_{sad}") - mean(first, f"prob_{sad}") > 0.25
    assert mean(first, "valence") - mean(second, "valence") > 0.3
    assert [r["time_s"] for r in rows[:3]] == [0.0, 0.1, 0.2]


@pytest.mark.parametrize("kind", ["ema", "one_euro"])
def test_smoothing_lowers_frame_to_frame_variance(clip: dict[str, Path], kind: str) -> None:
    pred = load_predictor(clip["ckpt"])
    rows = predict_video(pred, clip["avi"], VideoSettings(smoothing=SmoothingSettings(kind))).rows
    raw = np.diff([r["valence"] for r in rows])
    smooth = np.diff([r["valence_smooth"] for r in rows])
    assert np.var(smooth) < 0.5 * np.var(raw)
    assert rows[0]["valence_smooth"] == pytest.approx(rows[0]["valence"])


def test_tracker_ids_through_predict_video(clip: dict[str, Path]) -> None:
    class TwoFaces:  # a detector whose faces drift right; a third face from frame 5 on
        def detect_all(self, rgb: np.ndarray) -> list[Box]:
            self.k = getattr(self, "k", -1) + 1
            boxes = [Box(2 + self.k * 0.5, 2, 28, 28), Box(34, 30 + self.k * 0.3, 28, 28)]
            return boxes + ([Box(20, 20, 12, 12)] if self.k >= 5 else [])

    pred = load_predictor(clip["ckpt"])
    s = VideoSettings(detector=TwoFaces())
    rows = predict_video(pred, clip["avi"], s).rows
    ids = {(r["frame"], tuple(r["box"][:1])): r["face_id"] for r in rows}
    assert sorted({r["face_id"] for r in rows}) == [0, 1, 2]
    assert all(r["face_id"] == 2 for r in rows if r["box"][2] == 12)
    assert len(rows) == 2 * N + (N - 5) and ids


def test_cli_writes_table_trace_and_annotated_video(clip: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "pred.csv"
    rows = run(
        [
            f"ckpt_path={clip['ckpt']}",
            f"inputs={clip['avi']}",
            f"output={out}",
            f"video_out={tmp_path / 'ann.avi'}",
            "frame_stride=2",
            "threads=1",
        ]
    )
    assert len(rows) == N // 2
    with open(out) as fh:
        table = list(csv.DictReader(fh))
    assert [int(r["frame"]) for r in table] == list(range(0, N, 2))
    assert {"face_id", "box", "time_s", "expression_smooth", "valence_smooth"} <= set(table[0])
    assert (tmp_path / "clip.trace.png").stat().st_size > 1000  # beside output
    n, fps = _frames(tmp_path / "ann.avi")
    assert (n, fps) == (N // 2, pytest.approx(5.0))  # processed frames, at their rate
    assert not list(tmp_path.glob(".*partial*"))


def test_images_only_keep_their_columns(clip: dict[str, Path], tmp_path: Path) -> None:
    from PIL import Image

    frames, _ = switch_frames(2)
    Image.fromarray(frames[0]).save(tmp_path / "a.png")
    args = [f"ckpt_path={clip['ckpt']}", f"inputs={tmp_path / 'a.png'}", "output=null"]
    rows = run([*args, "face_detector=none"])  # no face columns either
    names = json.loads(json.dumps(list(rows[0])))
    assert names[:3] == ["file", "expression", "confidence"]
    assert names[-2:] == ["valence", "arousal"] and len(names) == 3 + 8 + 2


def test_folder_mixing_images_and_videos(clip: dict[str, Path], tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "in").mkdir()
    frames, _ = switch_frames(6)
    Image.fromarray(frames[0]).save(tmp_path / "in" / "a.png")
    write_video(tmp_path / "in" / "v.avi", frames)
    out = tmp_path / "p.json"
    run([f"ckpt_path={clip['ckpt']}", f"inputs={tmp_path / 'in'}", f"output={out}"])
    rows = json.loads(out.read_text())
    assert [("frame" in r) for r in rows] == [False] + [True] * 6


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_bad_videos_get_one_line(
    clip: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import cv2

    ck = f"ckpt_path={clip['ckpt']}"
    data = clip["mp4"].read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    assert "cut.mp4: OpenCV cannot open it" in _error(
        capsys, [ck, f"inputs={tmp_path / 'cut.mp4'}"]
    )
    w = cv2.VideoWriter(str(tmp_path / "zero.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    w.release()
    assert "zero.avi: no frame" in _error(capsys, [ck, f"inputs={tmp_path / 'zero.avi'}"])
    assert "camera:97" in _error(capsys, [ck, "inputs=camera:97"])
    assert "frame_stride=0" in _error(capsys, [ck, f"inputs={clip['avi']}", "frame_stride=0"])


def test_truncated_video_keeps_frames_and_says_where(
    clip: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = clip["avi"].read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: int(len(data) * 0.6)])
    out = tmp_path / "p.csv"
    err = _error(
        capsys, [f"ckpt_path={clip['ckpt']}", f"inputs={tmp_path / 'cut.avi'}", f"output={out}"]
    )
    with open(out) as fh:
        kept = len(list(csv.DictReader(fh)))
    assert 0 < kept < N
    assert f"stopped at frame {kept} of {N}" in err


def test_help_lists_the_video_keys() -> None:
    for key in (
        "smoothing",
        "ema_alpha",
        "one_euro_beta",
        "frame_stride",
        "max_fps",
        "max_frames",
        "max_seconds",
        "video_out",
        "traces",
    ):
        assert f"\n{key}: " in HELP


def test_ctrl_c_keeps_the_frames_read_so_far(clip: dict[str, Path], tmp_path: Path) -> None:
    """A camera is stopped with Ctrl-C: what was read is predicted and written, not lost."""
    pred = load_predictor(clip["ckpt"])
    seen = []

    def stop_after_seven(reader: object) -> None:
        seen.append(1)
        if len(seen) == 7:
            raise KeyboardInterrupt

    out = tmp_path / "ann.avi"
    res = predict_video(
        pred, clip["avi"], VideoSettings(batch_size=4), video_out=out, on_frame=stop_after_seven
    )
    assert res.interrupted
    assert [r["frame"] for r in res.rows] == list(range(7))
    assert _frames(out)[0] == 7
