"""fersuite-predict on a folder holding unreadable inputs next to good faces: every good input
is predicted and written, each bad one is named on one line of stderr and in the ``error``
column, and the exit status says that inputs failed; ``on_error=stop`` writes nothing."""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fersuite.cli.predict import main
from fersuite.data.synthetic import render_faces
from fersuite.labels import CANONICAL_CLASSES
from tests._helpers.apps import call_app
from tests.export.helpers import ZOO
from tests.video.helpers import write_video

PROBS = [f"prob_{c}" for c in CANONICAL_CLASSES]
GOOD = ["a.png", "b.jpg", "c.png"]
#: each bad file of the folder and what its line says
BAD = {
    "truncated.jpg": "corrupt or truncated image",
    "random.png": "not a readable image",
    "empty.png": "not a readable image",
    "bomb.png": "image too large to decode safely",
    "link.jpg": "broken symbolic link",
    "corrupt.mp4": "OpenCV cannot open it",
}
FRAMES = 4  # of the good video, z_clip.avi


def _bomb_png(path: Path) -> None:
    """A tiny PNG whose header declares 100000×100000 pixels (a decompression bomb)."""
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    struct.pack_into(">II", data, 16, 100_000, 100_000)  # IHDR width, height
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))  # its CRC
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, fake_checkpoint) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("bad_inputs")
    ckpt = fake_checkpoint(ZOO["lightweight_cnn"], seed=3)  # shared: read-only
    faces = render_faces(4, size=64, seed=2).images
    folder = root / "photos"
    (folder / "nested").mkdir(parents=True)
    Image.fromarray(faces[0]).save(folder / "a.png")
    Image.fromarray(faces[1]).save(folder / "b.jpg", quality=95)
    Image.fromarray(faces[2]).save(folder / "nested" / "c.png")
    jpeg = io.BytesIO()
    Image.fromarray(faces[3]).save(jpeg, "JPEG", quality=95)
    (folder / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (folder / "random.png").write_bytes(np.random.default_rng(0).bytes(2048))
    (folder / "empty.png").write_bytes(b"")
    _bomb_png(folder / "bomb.png")
    (folder / "dir.jpg").mkdir()  # a folder: searched like any other, not an input
    (folder / "notes.txt").write_text("not an image")  # not an image name: not an input
    os.symlink(root / "gone.jpg", folder / "link.jpg")
    (folder / "corrupt.mp4").write_bytes(np.random.default_rng(1).bytes(4096))
    rgb = [np.stack([f] * 3, axis=-1) for f in faces[:FRAMES]]
    write_video(folder / "z_clip.avi", rgb)
    return {"root": root, "ckpt": ckpt, "folder": folder}


def _base(setup: dict[str, Path]) -> list[str]:
    """The tiny checkpoint, faces cut as the centre square (no detector: fast, every frame)."""
    return [f"ckpt_path={setup['ckpt']}", "face_detector=none"]


def _lines(err: str) -> dict[str, str]:
    """``fersuite-predict: <file>: <why>`` lines by file name (asserting there is nothing else)."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    out = {}
    for line in lines:
        assert line.startswith("fersuite-predict: "), line
        file, why = line[len("fersuite-predict: ") :].split(": ", 1)
        out[Path(file).name] = why
    assert len(out) == len(lines), err
    return out


def _run(argv: list[str], capture: pytest.CaptureFixture[str]) -> tuple[int, dict[str, str]]:
    capture.readouterr()
    status = main(argv)
    return status, _lines(capture.readouterr().err)


def test_a_folder_with_bad_files_predicts_the_good_ones(
    setup: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Each kind of bad file beside good faces and a good video; stderr at the descriptor
    level (OpenCV's and PIL's own messages included) is one line per bad input."""
    out = tmp_path / "p.csv"
    argv = [*_base(setup), f"inputs={setup['folder']}", f"output={out}"]
    status, lines = _run([*argv, "batch_size=2", f"traces={tmp_path}"], capfd)
    assert status == 2
    assert sorted(lines) == sorted(BAD)  # one line per bad input, each naming it
    for name, why in BAD.items():
        assert why in lines[name], (name, lines[name])
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[-1] == "error"
    by_name: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_name.setdefault(Path(row["file"]).name, []).append(row)
    assert sorted(by_name) == sorted([*GOOD, *BAD, "z_clip.avi"])  # no notes.txt, no dir.jpg
    assert len(by_name["z_clip.avi"]) == FRAMES  # the video after the corrupt one went on
    for name in [*GOOD, "z_clip.avi"]:
        for row in by_name[name]:
            assert row["error"] == "" and row["expression"] in CANONICAL_CLASSES
            assert sum(float(row[p]) for p in PROBS) == pytest.approx(1.0, abs=1e-4)
    for name in BAD:
        (row,) = by_name[name]
        assert row["error"] == lines[name]
        assert row["expression"] == row["confidence"] == ""
        assert all(row[p] == "" for p in PROBS)
    # the good images are predicted as they are without the bad files beside them
    alone = tmp_path / "alone.csv"
    good = ",".join(str(setup["folder"] / n) for n in ["a.png", "b.jpg", "nested/c.png"])
    assert main([*_base(setup), f"inputs=[{good}]", f"output={alone}"]) == 0
    with open(alone) as fh:
        ref = {Path(r["file"]).name: r for r in csv.DictReader(fh)}
    for name in GOOD:
        assert float(by_name[name][0]["prob_happy"]) == pytest.approx(
            float(ref[name]["prob_happy"]), abs=1e-5
        )


def test_json_rows_of_bad_inputs_have_only_file_and_error(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.json"
    pics = setup["folder"]
    inputs = f"inputs=[{pics / 'a.png'},{pics / 'random.png'},{pics / 'bomb.png'}]"
    status, lines = _run([*_base(setup), inputs, f"output={out}"], capsys)
    assert status == 2 and sorted(lines) == ["bomb.png", "random.png"]
    good, rnd, bomb = json.loads(out.read_text())
    assert good["error"] is None and set(PROBS) <= set(good)
    assert rnd == {"file": str(pics / "random.png"), "error": lines["random.png"]}
    assert set(bomb) == {"file", "error"} and "too large" in bomb["error"]


def test_named_inputs_that_cannot_be_read_are_bad_inputs_too(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A named path that does not exist, an empty folder (even one named x.jpg), a dangling
    link and a named file that is no image: each one line, the good image still written."""
    pics = setup["folder"]
    named = [pics / "a.png", pics / "notes.txt", tmp_path / "nope.png", pics / "dir.jpg"]
    named.append(pics / "link.jpg")
    out = tmp_path / "p.csv"
    inputs = "inputs=[" + ",".join(map(str, named)) + "]"
    status, lines = _run([*_base(setup), inputs, f"output={out}"], capsys)
    assert status == 2
    assert lines == {
        "notes.txt": "not a readable image (unknown or corrupt format)",
        "nope.png": "does not exist",
        "dir.jpg": lines["dir.jpg"],
        "link.jpg": "does not exist",
    }
    assert lines["dir.jpg"].startswith("holds no .png/")
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    assert [(Path(r["file"]).name, bool(r["error"])) for r in rows] == [
        ("a.png", False),
        ("notes.txt", True),
        ("nope.png", True),
        ("dir.jpg", True),
        ("link.jpg", True),
    ]


def test_nothing_readable_writes_nothing(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pics = setup["folder"]
    out = tmp_path / "p.csv"
    inputs = f"inputs=[{pics / 'empty.png'},{pics / 'corrupt.mp4'}]"
    status, lines = _run([*_base(setup), inputs, f"output={out}"], capsys)
    assert status == 2 and sorted(lines) == ["corrupt.mp4", "empty.png"]
    assert not out.exists()


@pytest.mark.parametrize("previous", [False, True])
def test_on_error_stop_writes_nothing(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], previous: bool
) -> None:
    """``on_error=stop``: one line naming the first bad input, exit 2, and no output file -- or
    the previous one, byte for byte, untouched."""
    out = tmp_path / "p.csv"
    if previous:
        out.write_text("file,expression\nold.png,happy\n")
        os.utime(out, (1_000_000_000, 1_000_000_000))
    argv = [*_base(setup), f"inputs={setup['folder']}", f"output={out}"]
    status, lines = _run([*argv, "on_error=stop"], capsys)
    assert status == 2 and len(lines) == 1
    ((name, why),) = lines.items()
    assert name in BAD and BAD[name] in why
    if previous:
        assert out.read_text() == "file,expression\nold.png,happy\n"
        assert out.stat().st_mtime == 1_000_000_000
    assert sorted(p.name for p in tmp_path.iterdir()) == (["p.csv"] if previous else [])


def test_the_console_script_exits_2_and_names_each_bad_input(
    setup: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pics = setup["folder"]
    inputs = f"inputs=[{pics / 'b.jpg'},{pics / 'truncated.jpg'}]"
    res = call_app(
        main,
        "fersuite-predict",
        [*_base(setup), inputs],
        tmp_path,
        monkeypatch,
        capsys,
    )
    assert res.status == 2
    assert list(_lines(res.err)) == ["truncated.jpg"]
    with open(tmp_path / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [bool(r["error"]) for r in rows] == [False, True]


def test_on_error_takes_continue_or_stop(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*_base(setup), f"inputs={setup['folder']}", "on_error=skip"]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        "fersuite-predict: error: on_error='skip'; expected one of continue|stop"
    )


def test_an_image_mode_pil_cannot_convert_is_a_bad_input(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A well-formed LAB TIFF decodes but has no conversion to gray: a bad input, not a
    traceback."""
    Image.new("LAB", (64, 64)).save(tmp_path / "lab.tif")
    inputs = f"inputs=[{setup['folder'] / 'a.png'},{tmp_path / 'lab.tif'}]"
    status, lines = _run([*_base(setup), inputs, "output=null"], capsys)
    assert status == 2 and list(lines) == ["lab.tif"]
    assert lines["lab.tif"].startswith("unsupported LAB image")
