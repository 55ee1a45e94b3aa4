"""ONNX Runtime quantisation (int8 static QDQ, dynamic, fp16) and the agreement check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

from fersuite.deploy.base import OUTPUT_NAMES, TupleOutput
from fersuite.deploy.onnx import OnnxModel, export_onnx
from fersuite.deploy.onnx_quant import cpu_vnni, quantize_onnx
from fersuite.deploy.verify import compare_quantized
from fersuite.errors import ExportError
from fersuite.types import AffectOutput
from tests._helpers.export import FAST_ONNX
from tests.export.helpers import ZOO, make_checkpoint

CFG = ZOO["lightweight_cnn"]
SHAPE = (CFG["in_chans"], CFG["input_size"], CFG["input_size"])


@pytest.fixture(scope="module")
def fp32(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """The lightweight CNN (random weights) as fp32 ONNX with a dynamic batch axis. The legacy
    exporter (tests/_helpers/export.py) is ~10x faster here than dynamo; the quantiser reads
    any ONNX."""
    tmp = tmp_path_factory.mktemp("oq")
    _, net = make_checkpoint(tmp / "m.ckpt", CFG)
    path = tmp / "model.onnx"
    export_onnx(TupleOutput(net).eval(), torch.randn(2, *SHAPE), path, **FAST_ONNX)
    return path, net


def _batches(n: int, size: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn((size, *SHAPE), generator=gen) for _ in range(n)]


def _check_runs(path: Path) -> AffectOutput:
    """ORT loads the file; batch 1 and batch 5 give finite outputs of the right shapes."""
    model = OnnxModel(path)
    for n in (1, 5):
        out = model(torch.randn(n, *SHAPE))
        assert out.expression.shape == (n, 8) and out.valence.shape == (n,)
        assert out.arousal.shape == (n,)
        for t in out:
            assert torch.isfinite(t).all()
    return out


def _initializer_types(path: Path) -> set[int]:
    return {t.data_type for t in onnx.load(str(path)).graph.initializer}


def _io_types(path: Path) -> list[int]:
    g = onnx.load(str(path)).graph
    return [v.type.tensor_type.elem_type for v in (*g.input, *g.output)]


def test_int8_static_qdq_is_small_runs_and_agrees(fp32, tmp_path: Path) -> None:
    src, _ = fp32
    dst = tmp_path / "model.onnx"
    info = quantize_onnx(src, dst, "int8", _batches(3, 8, seed=1))

    assert info["quantize"] == "int8" and info["calibration_images"] == 24
    assert info["per_channel"] is True and info["reduce_range"] is False
    assert isinstance(info["cpu"]["vnni"], bool) and isinstance(info["cpu"]["flags"], list)
    assert dst.stat().st_size <= 0.35 * src.stat().st_size
    ops = {n.op_type for n in onnx.load(str(dst)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert TensorProto.INT8 in _initializer_types(dst)  # the conv weights
    assert _io_types(dst) == [TensorProto.FLOAT] * 4
    _check_runs(dst)

    held_out = [(x, torch.zeros(len(x), dtype=torch.long)) for x in _batches(4, 16, seed=2)]
    got = compare_quantized(OnnxModel(src), OnnxModel(dst), held_out)
    assert got["held_out_images"] == 64
    # random weights: small logit margins, yet far above chance (1/8) unless broken
    assert got["top1_agreement"] >= 0.5
    assert 0.0 < got["max_valence_diff"] < 1.0 and 0.0 < got["max_arousal_diff"] < 1.0


def test_dynamic_quantises_the_convolutions(fp32, tmp_path: Path) -> None:
    src, _ = fp32
    dst = tmp_path / "model.onnx"
    info = quantize_onnx(src, dst, "dynamic", None, reduce_range=True)
    assert info["quantize"] == "dynamic" and info["calibration_images"] == 0
    assert info["reduce_range"] is True and info["per_channel"] is True
    ops = {n.op_type for n in onnx.load(str(dst)).graph.node}
    assert "ConvInteger" in ops and "DynamicQuantizeLinear" in ops
    assert dst.stat().st_size <= 0.35 * src.stat().st_size
    _check_runs(dst)


def test_fp16_keeps_float32_io(fp32, tmp_path: Path) -> None:
    src, net = fp32
    dst = tmp_path / "model.onnx"
    info = quantize_onnx(src, dst, "fp16", None)
    assert info["quantize"] == "fp16" and info["per_channel"] is False
    assert _io_types(dst) == [TensorProto.FLOAT] * 4
    assert TensorProto.FLOAT16 in _initializer_types(dst)
    assert dst.stat().st_size <= 0.55 * src.stat().st_size
    _check_runs(dst)
    x = torch.randn(4, *SHAPE)
    with torch.no_grad():
        ref = net(x)
    got = OnnxModel(dst)(x)
    for name, r, g in zip(OUTPUT_NAMES, ref, got, strict=True):
        assert float((r - g).abs().max()) < 0.05, name


@pytest.mark.parametrize("calibration", [None, []])
def test_int8_without_calibration_is_a_one_line_error(fp32, tmp_path, calibration) -> None:
    src, _ = fp32
    with pytest.raises(ExportError, match=r"export\.calibration_samples") as err:
        quantize_onnx(src, tmp_path / "q.onnx", "int8", calibration)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "q.onnx").exists()


def test_bad_inputs_are_one_line_errors(fp32, tmp_path: Path) -> None:
    src, _ = fp32
    with pytest.raises(ExportError, match=r"export\.quantize='int4'"):
        quantize_onnx(src, tmp_path / "q.onnx", "int4", None)
    with pytest.raises(ExportError, match="no ONNX model"):
        quantize_onnx(tmp_path / "missing.onnx", tmp_path / "q.onnx", "fp16", None)
    with pytest.raises(ExportError, match=r"\(N, C, H, W\)"):
        quantize_onnx(src, tmp_path / "q.onnx", "int8", [torch.randn(*SHAPE)])
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    with pytest.raises(ExportError, match="ONNX dynamic quantisation failed") as err:
        quantize_onnx(broken, tmp_path / "q.onnx", "dynamic", None)
    assert "\n" not in str(err.value)


class _Fixed:
    """A runner whose outputs are given per call."""

    def __init__(self, outputs: list[AffectOutput]) -> None:
        self.outputs = iter(outputs)

    def __call__(self, x: torch.Tensor) -> AffectOutput:
        return next(self.outputs)


def _out(top: list[int], valence: list[float], arousal: list[float]) -> AffectOutput:
    logits = torch.zeros(len(top), 3)
    logits[torch.arange(len(top)), torch.tensor(top)] = 1.0
    return AffectOutput(logits, torch.tensor(valence), torch.tensor(arousal))


def test_compare_quantized_by_hand() -> None:
    x = torch.zeros(3, 1, 4, 4)
    # batch 1: labels 0,1,2; batch 2: labels 2,0,-1 (the -1 image counts only for agreement)
    ref = _Fixed(
        [_out([0, 1, 2], [0.1, 0.2, 0.3], [0, 0, 0]), _out([2, 0, 1], [0, 0, 0], [0.5] * 3)]
    )
    quant = _Fixed(
        [_out([0, 2, 2], [0.1, 0.5, 0.3], [0, 0, 0.1]), _out([2, 1, 0], [0, 0, -0.2], [0.5] * 3)]
    )
    batches = [(x, torch.tensor([0, 1, 2])), (x, torch.tensor([2, 0, -1]))]
    got = compare_quantized(ref, quant, batches)
    # agreement: batch 1 -> 2 of 3, batch 2 -> 1 of 3
    assert got["top1_agreement"] == pytest.approx(3 / 6)
    # fp32 correct: 0,1,2 + 2,0 = 5 of 5 labelled; quantised: 0,2 + 2 = 3 of 5
    assert got["accuracy_fp32"] == pytest.approx(1.0)
    assert got["accuracy_quantized"] == pytest.approx(3 / 5)
    assert got["max_valence_diff"] == pytest.approx(0.3)
    assert got["max_arousal_diff"] == pytest.approx(0.1)
    assert got["held_out_images"] == 6
    assert all(isinstance(v, float) for k, v in got.items() if k != "held_out_images")


def test_compare_quantized_rejects_nothing_and_mismatches() -> None:
    with pytest.raises(ExportError, match="no held-out images"):
        compare_quantized(_Fixed([]), _Fixed([]), [])
    one = _out([0], [0.0], [0.0])
    two = _out([0, 1], [0.0, 0.0], [0.0, 0.0])
    with pytest.raises(ExportError, match="held-out batch"):
        compare_quantized(_Fixed([two]), _Fixed([one]), [(torch.zeros(2, 1, 4, 4), torch.ones(2))])


def test_nan_output_is_an_infinite_difference() -> None:
    ref = _Fixed([_out([0], [0.0], [0.0])])
    bad = _Fixed([_out([0], [float("nan")], [0.0])])
    got = compare_quantized(ref, bad, [(torch.zeros(1, 1, 4, 4), torch.zeros(1))])
    assert got["max_valence_diff"] == float("inf")


@pytest.mark.parametrize(
    ("flags", "vnni"),
    [
        ("fpu sse avx2 fma avx512f avx512_vnni", True),
        ("fpu sse avx2 fma avx_vnni", True),
        ("fpu sse avx2 fma", False),
    ],
)
def test_cpu_vnni_reads_the_flags(tmp_path: Path, flags: str, vnni: bool) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    got = cpu_vnni(info)
    assert got["vnni"] is vnni
    assert "avx2" in got["flags"] and "fpu" not in got["flags"]


def test_cpu_vnni_unknown_cpu_is_false(tmp_path: Path) -> None:
    got = cpu_vnni(tmp_path / "absent")
    assert got["vnni"] is False and got["flags"] == []
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp\n")
    assert cpu_vnni(arm)["vnni"] is False
    assert isinstance(np.bool_(cpu_vnni()["vnni"]).item(), bool)
