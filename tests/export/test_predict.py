"""fersuite-predict on a few PNGs: checkpoint, ONNX and TorchScript agree; bad input is named."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fersuite.cli.predict import main, run
from fersuite.data.synthetic import render_faces
from fersuite.data.transforms import build_transforms
from fersuite.labels import CANONICAL_CLASSES
from tests._helpers.export import FAST_ONNX
from tests.conftest import run_env
from tests.export.helpers import TINY_CNN


@pytest.fixture(scope="module")
def exported(
    tmp_path_factory: pytest.TempPathFactory, fake_checkpoint, exported_checkpoint
) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("predict")
    # the smallest lightweight CNN (32x32, 1 channel): predict is the subject, not the model
    ckpt = fake_checkpoint(TINY_CNN, seed=3)  # shared: read-only
    fast = {"latency_runs": 0, "verify_faces": 2, **FAST_ONNX}
    onnx_dir = exported_checkpoint(ckpt, **fast)
    ts_dir = exported_checkpoint(ckpt, format="torchscript", **fast)
    faces = render_faces(4, size=64, seed=1)
    images = root / "images"
    (images / "nested").mkdir(parents=True)
    Image.fromarray(faces.images[0]).save(images / "gray.png")
    Image.fromarray(faces.images[0]).convert("RGB").save(images / "rgb.png")  # gray copy
    rgba = Image.fromarray(faces.images[2]).convert("RGBA")
    rgba.save(images / "nested" / "rgba.png")
    Image.fromarray(faces.images[3]).save(images / "nested" / "big.jpg", quality=95)
    (images / "notes.txt").write_text("not an image")
    return {
        "root": root,
        "ckpt": ckpt,
        "onnx": onnx_dir / "model.onnx",
        "ts": ts_dir / "model.pt",
        "images": images,
    }


def _by_file(rows: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    return {Path(str(r["file"])).name: r for r in rows}


def test_checkpoint_onnx_and_torchscript_agree(exported: dict[str, Path], tmp_path: Path) -> None:
    images = str(exported["images"])
    ck = _by_file(run([f"ckpt_path={exported['ckpt']}", f"inputs={images}", "output=null"]))
    ox = _by_file(run([f"ckpt_path={exported['onnx']}", f"inputs={images}", "output=null"]))
    ts = _by_file(run([f"ckpt_path={exported['ts']}", f"inputs={images}", "output=null"]))
    # folders are searched recursively, only image files are taken
    assert sorted(ck) == ["big.jpg", "gray.png", "rgb.png", "rgba.png"]
    assert sorted(ox) == sorted(ck) == sorted(ts)
    for name, row in ck.items():
        for key in [f"prob_{c}" for c in CANONICAL_CLASSES] + ["valence", "arousal"]:
            assert abs(float(row[key]) - float(ox[name][key])) <= 1e-4, (name, key)  # type: ignore[arg-type]
            assert abs(float(row[key]) - float(ts[name][key])) <= 1e-4, (name, key)  # type: ignore[arg-type]
        assert row["expression"] == ox[name]["expression"]
    # a gray image and its RGB copy are the same input for a 1-channel model
    assert ck["gray.png"]["prob_happy"] == pytest.approx(ck["rgb.png"]["prob_happy"], abs=1e-6)


def test_rows_are_the_model_output_on_the_eval_transform(exported: dict[str, Path]) -> None:
    from fersuite.checkpoint import load_model_from_checkpoint

    (row,) = run(
        [
            f"ckpt_path={exported['ckpt']}",
            f"inputs={exported['images'] / 'gray.png'}",
            "output=null",
        ]
    )
    net, meta = load_model_from_checkpoint(exported["ckpt"])
    img = torch.from_numpy(np.array(Image.open(exported["images"] / "gray.png"))).unsqueeze(0)
    x = build_transforms(meta.input_size, meta.in_chans, meta.mean, meta.std, train=False)(img)
    with torch.no_grad():
        out = net(x.unsqueeze(0))
    probs = out.expression.softmax(1)[0]
    k = int(probs.argmax())
    assert row["expression"] == CANONICAL_CLASSES[k]
    assert row["confidence"] == pytest.approx(float(probs[k]), abs=1e-6)
    assert row["valence"] == pytest.approx(float(out.valence[0]), abs=1e-6)
    assert sum(float(row[f"prob_{c}"]) for c in CANONICAL_CLASSES) == pytest.approx(1.0)


def test_csv_and_json_outputs(exported: dict[str, Path], tmp_path: Path) -> None:
    imgs = exported["images"]
    inputs = f"inputs=[{imgs / 'gray.png'},{imgs / 'nested'}]"
    out_csv = tmp_path / "p.csv"
    assert main([f"ckpt_path={exported['onnx']}", inputs, f"output={out_csv}"]) == 0
    with open(out_csv) as fh:
        rows = list(csv.DictReader(fh))
    assert [Path(r["file"]).name for r in rows] == ["gray.png", "big.jpg", "rgba.png"]
    assert list(rows[0])[:3] == ["file", "expression", "confidence"]
    assert {"valence", "arousal", "prob_contempt"} <= set(rows[0])
    out_json = tmp_path / "p.json"
    assert main([f"ckpt_path={exported['onnx']}", inputs, f"output={out_json}"]) == 0
    data = json.loads(out_json.read_text())
    assert len(data) == 3 and data[0]["expression"] in CANONICAL_CLASSES


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["inputs=x.png"], "ckpt_path=<.ckpt | .onnx | .pt> is required"),
        (["ckpt_path=CKPT"], "inputs=<image file or folder>"),
        (["ckpt_path=CKPT", "inputs=IMAGES", "batch_size=0"], "batch_size=0"),
        (["ckpt_path=CKPT", "inputs=IMAGES", "colour=1"], "unknown keys ['colour']"),
        (["ckpt_path=CKPT", "inputs=IMAGES", "output=p.txt"], "expected a .csv or .json"),
        (["ckpt_path=missing.ckpt", "inputs=IMAGES"], "ckpt_path=missing.ckpt: file not found"),
        (["ckpt_path=ORPHAN", "inputs=IMAGES"], "no sidecar model.json beside"),
        (["ckpt_path"], "arguments must be key=value"),
    ],
)
def test_bad_input_is_one_line_naming_it(
    exported: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    message: str,
) -> None:
    (tmp_path / "EMPTY").mkdir()
    orphan = tmp_path / "model.onnx"
    orphan.write_bytes(exported["onnx"].read_bytes())  # no sidecar beside it
    monkeypatch.chdir(tmp_path)
    subst = {
        "CKPT": str(exported["ckpt"]),
        "IMAGES": str(exported["images"]),
        "ORPHAN": str(orphan),
    }
    for k, v in subst.items():
        args = [a.replace(k, v) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fersuite-predict: error: ") and len(err.splitlines()) == 1
    assert message in err
    assert not (tmp_path / "p.txt").exists()


def test_face_cropping_with_the_datasets_detector(
    exported: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from fersuite.data import faces

    base = [f"ckpt_path={exported['ckpt']}", f"inputs={exported['images'] / 'gray.png'}"]
    args = [*base, "output=null", "face_detector=yunet", "face_margin=0.0"]
    # no model file: the detector's own one-line error, with the predict key names
    assert main(args) == 2
    assert "face_detector_model=null: a YuNet .onnx model file is required" in (
        capsys.readouterr().err
    )

    class Fixed:
        def __init__(self, box: faces.Box | None) -> None:
            self.box = box
            self.seen: list[tuple[int, ...]] = []

        def detect(self, rgb: np.ndarray) -> faces.Box | None:
            self.seen.append(rgb.shape)
            return self.box

    detector = Fixed(faces.Box(16, 16, 32, 32))
    monkeypatch.setattr(faces, "make_detector", lambda *a, **k: detector)
    (cropped,) = run([*args, "face_detector_model=yunet.onnx"])
    (plain,) = run([*base, "output=null", "face_detector=none"])  # centre square only
    assert detector.seen == [(64, 64, 3)]  # the detector sees the RGB image
    assert cropped["face_found"] is True and "face_found" not in plain
    assert cropped["prob_happy"] != plain["prob_happy"]  # the model saw the crop

    detector.box = None  # no face: said so, and nothing guessed from a centre crop
    (fallback,) = run([*args, "face_detector_model=yunet.onnx"])
    assert fallback["face_found"] is False and fallback["face"] == "no_face"
    assert "prob_happy" not in fallback and "expression" not in fallback


@pytest.mark.smoke
@pytest.mark.subprocess
def test_console_script(exported: dict[str, Path], tmp_path: Path) -> None:
    exe = str(Path(sys.executable).parent / "fersuite-predict")
    res = subprocess.run(
        [exe, f"ckpt_path={exported['onnx']}", f"inputs={exported['images']}"],
        cwd=tmp_path,
        env=run_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "fersuite predictions (4 images)" in res.stdout
    assert (tmp_path / "predictions.csv").is_file()


@pytest.mark.parametrize("location", ["weights.bin", "../weights.bin", "ABSOLUTE"])
def test_onnx_external_data_outside_its_folder_is_refused(
    exported: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    location: str,
) -> None:
    """A shared .onnx whose weights name a file outside its own folder (``../``, or an absolute
    path) must not read that file: one line naming the model, status 2. The control: the same
    weights file beside the model loads and predicts."""
    import onnx

    model_dir = tmp_path / "shared"
    model_dir.mkdir()
    secret = (model_dir if location == "weights.bin" else tmp_path) / "weights.bin"
    src = exported["onnx"]
    for f in src.parent.iterdir():  # the model and its sidecar
        (model_dir / f.name).write_bytes(f.read_bytes())
    proto = onnx.load(str(model_dir / src.name))
    init = max(proto.graph.initializer, key=lambda t: len(t.raw_data))
    secret.write_bytes(init.raw_data)  # the right size: only the location is wrong
    init.ClearField("raw_data")
    init.data_location = onnx.TensorProto.EXTERNAL
    where = str(secret) if location == "ABSOLUTE" else location
    size = str(secret.stat().st_size)
    for key, value in (("location", where), ("offset", "0"), ("length", size)):
        entry = init.external_data.add()
        entry.key, entry.value = key, value
    (model_dir / src.name).write_bytes(proto.SerializeToString())

    args = [f"ckpt_path={model_dir / src.name}", f"inputs={exported['images']}", "output=null"]
    if location == "weights.bin":
        assert len(run(args)) == 4
        return
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fersuite-predict: error: ") and len(err.splitlines()) == 1
    assert str(model_dir / src.name) in err and "xternal data" in err


def test_a_torchscript_file_that_writes_files_is_refused(
    exported: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The shared ``model.pt`` beside a genuine sidecar saves its input to a file when called:
    one line, status 2, no file written (fersuite.deploy.torchscript)."""
    from tests.deploy.test_torchscript import _SavesInForward

    target = tmp_path / "written.pt"
    model = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(_SavesInForward(str(target))), str(model))
    sidecar = exported["ts"].with_suffix(".json")
    (tmp_path / sidecar.name).write_bytes(sidecar.read_bytes())
    assert main([f"ckpt_path={model}", f"inputs={exported['images']}", "output=null"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fersuite-predict: error: ") and len(err.splitlines()) == 1
    assert str(model) in err and "aten::save" in err
    assert not target.exists()
