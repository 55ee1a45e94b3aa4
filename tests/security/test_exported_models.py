"""Exported models from someone else (``model.onnx`` / ``model.pte`` beside a ``model.json``):
a file whose declared interface is not what fersuite-export writes, or that is not a model at
all, is refused by ``fersuite-predict`` and ``fersuite-eval`` alike with one line naming the
file and the part, exit status 2, before anything runs (:mod:`fersuite.deploy.onnx`,
:mod:`fersuite.deploy.executorch`); a file outside the model's folder stays as it was.

The crafted ONNX graphs are tiny and built with ``onnx.helper``; the control (the same builder
with nothing wrong) predicts. The real model is the tiniest lightweight CNN, exported once.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fersuite.checkpoint import read_card
from fersuite.cli.eval import main as eval_main
from fersuite.cli.predict import main as predict_main
from fersuite.data.synthetic import render_faces
from tests._helpers.apps import AppResult, call_app
from tests._helpers.export import FAST_ONNX
from tests.export.helpers import TINY_CNN, make_checkpoint
from tests.security.apps import Victim

SIDE, CLASSES = 32, 8


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real export (legacy ONNX, with its sidecar) and one face image to predict on."""
    from fersuite.deploy.exporter import ExportSettings, export_checkpoint

    root = tmp_path_factory.mktemp("real")
    ckpt, _ = make_checkpoint(root / "m.ckpt", TINY_CNN, seed=3)
    settings = ExportSettings(latency_runs=0, verify_faces=1, **FAST_ONNX)  # type: ignore[call-arg]
    export_checkpoint(ckpt, settings, root / "onnx")
    images = root / "images"
    images.mkdir()
    Image.fromarray(render_faces(1, size=64, seed=1).images[0]).save(images / "face.png")
    return {"onnx": root / "onnx" / "model.onnx", "images": images}


@pytest.fixture
def victim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Victim]:
    """A file and a folder outside every run's temp dir, checked unchanged after the test."""
    v = Victim.make(tmp_path_factory.mktemp("victim"))
    before = v.snapshot()
    yield v
    v.assert_untouched(before)


def _place(folder: Path, name: str, data: bytes, real: dict[str, Path]) -> Path:
    """``data`` as ``folder/name`` beside a copy of the real export's sidecar."""
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / name
    model.write_bytes(data)
    sidecar = json.loads(real["onnx"].with_suffix(".json").read_text())
    if model.suffix == ".pte":
        sidecar.update(format="executorch", file=model.name)
    model.with_suffix(".json").write_text(json.dumps(sidecar))
    return model


def _predict(
    model: Path,
    real: dict[str, Path],
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> AppResult:
    args = [f"ckpt_path={model}", f"inputs={real['images']}", "output=null"]
    return call_app(predict_main, "fersuite-predict", args, root, monkeypatch, capsys)


def _eval(
    model: Path, root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> AppResult:
    args = [
        f"ckpt_path={model}",
        f"hydra.run.dir={root / 'run'}",
        "logger=none",
        "data.num_workers=0",
        "data.test_size=8",
    ]
    return call_app(eval_main, "fersuite-eval", args, root, monkeypatch, capsys)


def _assert_refused(app: str, res: AppResult, model: Path, *words: str) -> None:
    """Status 2 and one line ``fersuite-<app>: error: ...`` naming ``model`` (and ``words``),
    no traceback."""
    assert res.status == 2, res.err[-2000:]
    assert len(res.error_lines) == 1, res.err[-2000:]
    line = res.error_lines[0]
    assert line.startswith(f"fersuite-{app}: error: ") and str(model) in line, line
    for word in words:
        assert word in line, (word, line)
    assert "Traceback" not in res.err, res.err[-3000:]


def _both_refuse(
    model: Path,
    tmp_path: Path,
    real: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *words: str,
) -> None:
    root = tmp_path / "runs"
    root.mkdir()
    _assert_refused("predict", _predict(model, real, root, monkeypatch, capsys), model, *words)
    _assert_refused("eval", _eval(model, root, monkeypatch, capsys), model, *words)
    assert not (root / "run" / "metrics.json").exists()


# --- crafted ONNX graphs ---------------------------------------------------------------------


def _onnx(
    name: str = "image",
    dims: Sequence[int | str] = ("N", 1, SIDE, SIDE),
    dtype: int | None = None,
    outputs: Sequence[str] = ("expression", "valence", "arousal"),
    classes: int = CLASSES,
    external: str | None = None,
) -> bytes:
    """A tiny graph with fersuite's interface, one thing changed: ``expression = mean(x) @ W``
    ``[N, classes]``, ``valence = mean(x)`` ``[N]``, ``arousal = -valence``, ``pooled``
    (``[N, 1]``) an extra output when named. ``external``: W stored in that file."""
    from onnx import TensorProto, helper, numpy_helper

    dtype = TensorProto.FLOAT if dtype is None else dtype
    np_type = np.float64 if dtype == TensorProto.DOUBLE else np.float32
    weight = numpy_helper.from_array(np.ones((1, classes), dtype=np_type), "W")
    if external is not None:
        weight.ClearField("raw_data")
        weight.data_location = TensorProto.EXTERNAL
        for key, value in (("location", external), ("offset", "0"), ("length", str(4 * classes))):
            entry = weight.external_data.add()
            entry.key, entry.value = key, value
    one = numpy_helper.from_array(np.array([1], dtype=np.int64), "one")
    nodes = [
        helper.make_node("Flatten", [name], ["flat"], axis=1),
        helper.make_node("ReduceMean", ["flat", "one"], ["pooled"], keepdims=1),
        helper.make_node("MatMul", ["pooled", "W"], ["expression"]),
        helper.make_node("Squeeze", ["pooled", "one"], ["valence"]),
        helper.make_node("Neg", ["valence"], ["arousal"]),
    ]
    shapes = {"expression": ["N", classes], "valence": ["N"], "arousal": ["N"], "pooled": ["N", 1]}
    graph = helper.make_graph(
        nodes,
        "crafted",
        [helper.make_tensor_value_info(name, dtype, list(dims))],
        [helper.make_tensor_value_info(o, dtype, shapes[o]) for o in outputs],
        initializer=[weight, one],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return bytes(model.SerializeToString())


def test_the_crafted_control_and_the_real_export_predict(
    real: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The builder's graph with nothing changed, and the real export, are accepted: each
    refusal below is for the one thing changed."""
    from fersuite.cli.predict import run

    for model in (_place(tmp_path / "ok", "model.onnx", _onnx(), real), real["onnx"]):
        args = [f"ckpt_path={model}", f"inputs={real['images']}", "output=null"]
        (row,) = run(args)
        assert sum(
            row[f"prob_{c}"]
            for c in json.loads(model.with_suffix(".json").read_text())["class_names"]
        ) == pytest.approx(1.0)


CRAFTED = {
    "input named img": (dict(name="img"), "inputs: ['img']; expected one input named 'image'"),
    "rank 3 input": (dict(dims=("N", SIDE, SIDE)), "input 'image': shape ['N', 32, 32]"),
    "dim 100000": (dict(dims=("N", 1, 100000, SIDE)), "shape ['N', 1, 100000, 32]"),
    "negative dim": (dict(dims=("N", 1, -3, SIDE)), "shape ['N', 1, -3, 32]"),
    "symbolic side": (dict(dims=("N", 1, "H", "W")), "expected shape [N, 1, 32, 32]"),
    "3 channels": (dict(dims=("N", 3, SIDE, SIDE)), "the model card's channels and input size"),
    "batch 4": (dict(dims=(4, 1, SIDE, SIDE)), "batch axis 4; expected a dynamic batch axis"),
    "string input": (dict(dtype=8), "input 'image': dtype string; expected float32"),
    "float64 model": (dict(dtype=11), "dtype float64; expected float32"),
    "2 outputs": (dict(outputs=("expression", "valence")), "outputs: ['expression', 'valence']"),
    "4 outputs": (
        dict(outputs=("expression", "valence", "arousal", "pooled")),
        "expected the outputs expression, valence, arousal",
    ),
    "7 logits for 8 classes": (
        dict(classes=7),
        "output 'expression': shape ['N', 7]; expected shape [N, 8]",
    ),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_a_crafted_onnx_interface_is_refused_by_predict_and_eval(
    case: str,
    real: dict[str, Path],
    tmp_path: Path,
    victim: Victim,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    kwargs, message = CRAFTED[case]
    model = _place(tmp_path / "shared", "model.onnx", _onnx(**kwargs), real)  # type: ignore[arg-type]
    _both_refuse(model, tmp_path, real, monkeypatch, capsys, message)


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("model/data.pkl", b"\x80\x02}q\x00." * 20)
    return buf.getvalue()


GARBAGE = {
    "random bytes": lambda good: np.random.default_rng(0).bytes(4096),
    "a zip renamed .onnx": lambda good: _zip(),
    "truncated": lambda good: good[: len(good) // 2],
    "empty": lambda good: b"",
}


@pytest.mark.parametrize("case", list(GARBAGE))
def test_an_onnx_that_is_no_model_is_refused_by_predict_and_eval(
    case: str,
    real: dict[str, Path],
    tmp_path: Path,
    victim: Victim,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = GARBAGE[case](real["onnx"].read_bytes())
    model = _place(tmp_path / "shared", "model.onnx", data, real)
    _both_refuse(model, tmp_path, real, monkeypatch, capsys, "not an ONNX model")


@pytest.mark.parametrize("where", ["absolute", "relative"])
def test_weights_stored_in_a_file_outside_the_folder_are_refused(
    where: str,
    real: dict[str, Path],
    tmp_path: Path,
    victim: Victim,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The graph's weight names the victim file as its external data (by absolute path, or
    ``../`` from the model's folder): refused before ONNX Runtime reads it."""
    folder = tmp_path / "shared"
    location = str(victim.file) if where == "absolute" else os.path.relpath(victim.file, folder)
    model = _place(folder, "model.onnx", _onnx(external=location), real)
    _both_refuse(model, tmp_path, real, monkeypatch, capsys, "external data", "model's own folder")


def test_an_onnx_above_the_size_bound_is_refused_unread(
    real: dict[str, Path],
    tmp_path: Path,
    victim: Victim,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import fersuite.deploy.onnx as deploy_onnx

    model = _place(tmp_path / "shared", "model.onnx", real["onnx"].read_bytes(), real)
    monkeypatch.setattr(deploy_onnx, "MAX_BYTES", model.stat().st_size - 1)
    _both_refuse(
        model, tmp_path, real, monkeypatch, capsys, "bytes; expected an ONNX model of at most"
    )


def test_outputs_that_differ_from_the_declared_ones_are_refused_when_run(
    real: dict[str, Path], tmp_path: Path
) -> None:
    """A graph can declare ``[N, 8]`` and compute something else: the runner checks what runs."""
    from fersuite.deploy.onnx import OnnxModel
    from fersuite.errors import UntrustedFileError

    card = read_card(json.loads(real["onnx"].with_suffix(".json").read_text()), "card")
    model = _place(tmp_path / "lying", "model.onnx", _onnx(), real)
    runner = OnnxModel(model, card=card)
    runner.session = _Lying(runner.session)  # type: ignore[assignment]
    with pytest.raises(UntrustedFileError, match=r"model\.onnx: outputs float32\[2, 16\]"):
        runner(torch.zeros((2, 1, SIDE, SIDE)))


class _Lying:
    def __init__(self, session: object) -> None:
        self.session = session

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        e, v, a = self.session.run(names, feeds)  # type: ignore[attr-defined]
        return [np.concatenate([e, e], axis=1), v, a]


# --- ExecuTorch ------------------------------------------------------------------------------


def test_a_pte_that_is_no_program_is_refused_by_predict_and_eval(
    real: dict[str, Path],
    tmp_path: Path,
    victim: Victim,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = np.random.default_rng(1).bytes(4096)
    model = _place(tmp_path / "shared", "model.pte", data, real)
    _both_refuse(model, tmp_path, real, monkeypatch, capsys, "ExecuTorch cannot load")


class _Program(torch.nn.Module):
    """fersuite's signature with one thing changed (``kind``)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.fc = torch.nn.Linear(1, CLASSES - 1 if kind == "7 logits" else CLASSES)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pooled = x.float().mean((1, 2, 3)).unsqueeze(1)
        v = torch.tanh(pooled[:, 0])
        if self.kind == "2 outputs":
            return self.fc(pooled), v
        return self.fc(pooled), v, -v


PTE_CASES = {
    "control": ((1, 1, SIDE, SIDE), torch.float32, ""),
    "truncated": ((1, 1, SIDE, SIDE), torch.float32, "ExecuTorch cannot load"),
    "3 channels": ((1, 3, SIDE, SIDE), torch.float32, "input 0 (image): shape (1, 3, 32, 32)"),
    "batch 2": ((2, 1, SIDE, SIDE), torch.float32, "input 0 (image): shape (2, 1, 32, 32)"),
    "int64 input": ((1, 1, SIDE, SIDE), torch.int64, "input 0 (image): dtype int64"),
    "2 outputs": ((1, 1, SIDE, SIDE), torch.float32, "1 inputs and 2 outputs"),
    "7 logits": ((1, 1, SIDE, SIDE), torch.float32, "output 0 (expression): shape (1, 7)"),
}
MUTATED = {"operator name not UTF-8": "operator name: b'aten::\\xff"}


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Real ExecuTorch programs (``torch.export`` + ``to_edge``, portable kernels: ~1 s each
    after the imports), one per case."""
    from executorch.exir import to_edge

    out: dict[str, bytes] = {}
    for case, (shape, dtype, _) in PTE_CASES.items():
        if case == "truncated":  # the control program (the same one), cut in half
            continue
        example = torch.zeros(shape, dtype=dtype)
        program = torch.export.export(_Program(case).eval(), (example,))
        out[case] = bytes(to_edge(program).to_executorch().buffer)
    out["truncated"] = out["control"][: len(out["control"]) // 2]
    # a well-formed program whose operator name is not UTF-8 (the runtime's binding aborted
    # the process writing it to its log)
    control = bytearray(out["control"])
    i = control.index(b"aten::")
    control[i + 6] = 0xFF
    out["operator name not UTF-8"] = bytes(control)
    return out


@pytest.mark.parametrize("case", [*PTE_CASES, *MUTATED])
def test_a_pte_program_is_checked_before_it_runs(
    case: str,
    programs: dict[str, bytes],
    real: dict[str, Path],
    tmp_path: Path,
    victim: Victim,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model = _place(tmp_path / "shared", "model.pte", programs[case], real)
    if case == "control":  # the same program, nothing changed: it predicts
        root = tmp_path / "runs"
        root.mkdir()
        res = _predict(model, real, root, monkeypatch, capsys)
        assert res.status == 0, res.err[-2000:]
        return
    message = MUTATED[case] if case in MUTATED else PTE_CASES[case][2]
    _both_refuse(model, tmp_path, real, monkeypatch, capsys, message)


def test_a_pte_planning_too_much_memory_is_refused_before_its_method_loads(
    programs: dict[str, bytes],
    real: dict[str, Path],
    tmp_path: Path,
    victim: Victim,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import fersuite.deploy.executorch as deploy_et

    model = _place(tmp_path / "shared", "model.pte", programs["control"], real)
    monkeypatch.setattr(deploy_et, "MAX_PLANNED_BYTES", 16)
    _both_refuse(model, tmp_path, real, monkeypatch, capsys, "planned memory", "at most 16")


def test_fersuite_exports_pass_the_reader(real: dict[str, Path], tmp_path: Path) -> None:
    """The int8, dynamic and fp16 files fersuite-export writes from the real model load."""
    from fersuite.deploy.onnx import OnnxModel
    from fersuite.deploy.onnx_quant import quantize_onnx

    card = read_card(json.loads(real["onnx"].with_suffix(".json").read_text()), "card")
    x = torch.randn((3, 1, SIDE, SIDE), generator=torch.Generator().manual_seed(0))
    ref = OnnxModel(real["onnx"], card=card)(x)
    for mode in ("int8", "dynamic", "fp16"):
        dst = tmp_path / f"{mode}.onnx"
        calib = [torch.randn((4, 1, SIDE, SIDE))] if mode == "int8" else None
        quantize_onnx(real["onnx"], dst, mode, calib, False)
        out = OnnxModel(dst, card=card)(x)
        assert out.expression.shape == ref.expression.shape == (3, CLASSES), mode
        assert out.valence.shape == (3,) and out.arousal.shape == (3,), mode
