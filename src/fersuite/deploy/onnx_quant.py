"""ONNX Runtime quantisation of an exported fp32 ``model.onnx``: int8 (static QDQ), dynamic, fp16.

* ``int8``: :func:`onnxruntime.quantization.quant_pre_process` (symbolic shape inference and
  ORT's basic graph optimisations, which fold BatchNorm into Conv so no BN is left to quantise),
  then :func:`~onnxruntime.quantization.quantize_static` in QDQ format with per-channel weights,
  MinMax ranges calibrated on the given normalised image batches.
* ``dynamic``: :func:`~onnxruntime.quantization.quantize_dynamic` (int8 weights, activations
  quantised on the fly per batch). It rewrites only ``Conv`` (ConvInteger), ``MatMul``
  (MatMulInteger), ``Attention``, ``LSTM`` and ``Gather``; ``Gemm`` (the linear heads) stays
  fp32. On CNNs it shrinks the file like int8 but runs slower than fp32 on ORT's CPU provider
  (each ConvInteger quantises its input at run time): use int8 for CNNs.
* ``fp16``: ``onnxruntime.transformers.float16.convert_float_to_float16`` with
  ``keep_io_types=True`` (the file keeps its float32 input and outputs). ORT's CPU provider has
  few fp16 kernels on x86 and casts back to fp32 around the rest: fp16 halves the file, not the
  latency, on this kind of CPU.
"""

from __future__ import annotations

import itertools
import platform
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnxruntime.quantization import (
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from onnxruntime.transformers.float16 import convert_float_to_float16

from fersuite.deploy.base import INPUT_NAME, first_line, quiet
from fersuite.errors import ExportError

__all__ = ["MODES", "cpu_vnni", "quantize_onnx"]

MODES = ("int8", "dynamic", "fp16")

#: /proc/cpuinfo flags that decide how int8 kernels run on x86.
_RELEVANT_FLAGS = frozenset(
    {
        "avx2",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512_vnni",
        "avx_vnni",
        "avx512_bf16",
        "avx512_fp16",
        "amx_int8",
        "amx_bf16",
        "f16c",
    }
)
_VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni"})

#: Calibration batches held before their ranges are merged (bounds memory, same result).
_CALIB_CHUNK = 16


def cpu_vnni(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, Any]:
    """Whether this x86 CPU has VNNI (``avx512_vnni`` or ``avx_vnni``), and the int8-relevant
    flags found. ``vnni`` is False (``flags`` empty) where ``cpuinfo`` cannot be read or the
    CPU is not x86: int8 kernels without VNNI may saturate; ``reduce_range=True`` avoids it."""
    flags: set[str] = set()
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":  # x86; ARM writes "Features"
            flags = set(value.split())
            break
    found = sorted(flags & _RELEVANT_FLAGS)
    return {"vnni": bool(flags & _VNNI_FLAGS), "flags": found, "machine": platform.machine()}


class _TensorReader:
    """An ``onnxruntime.quantization.CalibrationDataReader`` (which recognises any class with
    ``get_next``) over normalised torch batches; counts the images it hands out."""

    def __init__(self, batches: Iterable[torch.Tensor]) -> None:
        self._it: Iterator[torch.Tensor] = iter(batches)
        self.images = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._it, None)
        if x is None:
            return None
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ExportError(f"calibration batches must be (N, C, H, W) tensors, got {got}")
        self.images += int(x.shape[0])
        return {INPUT_NAME: x.detach().cpu().float().contiguous().numpy()}


def _preprocess(src: Path, dst: Path) -> None:

    quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)


def _int8(src: Path, dst: Path, calibration: Iterable[torch.Tensor], reduce_range: bool) -> int:

    reader = _TensorReader(calibration)
    with tempfile.TemporaryDirectory(prefix="fersuite-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        _preprocess(src, pre)
        # QDQ: ORT's CPU provider fuses it into QLinearConv/QLinearAdd/QGemm. Weights QInt8,
        # symmetric, per output channel (depthwise convs need it); activations QUInt8,
        # asymmetric: x86 int8 kernels are u8*s8 (VPMADDUBSW, VPDPBUSD with VNNI) and uint8
        # uses the whole range after ReLU; ORT recommends this pair on x86, with
        # reduce_range=True on CPUs without VNNI, where u8*s8 pairs can saturate 16 bits.
        # Measured on an AVX2 CPU without VNNI (random-weight lightweight CNN): S8S8 was no
        # faster and no more accurate than U8S8. experiments/onnx_quant/README.md has numbers.
        quantize_static(
            str(pre),
            str(dst),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"CalibMaxIntermediateOutputs": _CALIB_CHUNK},
        )
    return reader.images


def _dynamic(src: Path, dst: Path, reduce_range: bool) -> None:

    with tempfile.TemporaryDirectory(prefix="fersuite-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        _preprocess(src, pre)
        quantize_dynamic(
            str(pre),
            str(dst),
            per_channel=True,
            reduce_range=reduce_range,
            weight_type=QuantType.QInt8,
        )


def _fp16(src: Path, dst: Path) -> None:

    model = onnx.load(str(src))
    half = convert_float_to_float16(model, keep_io_types=True)
    onnx.save(half, str(dst))


def _strip_node_metadata(path: Path) -> None:
    """Drop the exporter's per-node ``metadata_props`` (PyTorch stack traces and module names,
    ~12 % of a small quantised file); the graph and weights are unchanged."""

    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
    onnx.save(model, str(path))


def quantize_onnx(
    src: Path,
    dst: Path,
    mode: str,
    calibration: Iterable[torch.Tensor] | None,
    reduce_range: bool = False,
) -> dict[str, Any]:
    """Quantise the fp32 ONNX file ``src`` (from :func:`fersuite.deploy.onnx.export_onnx`) into
    ``dst`` (``mode``: int8 | dynamic | fp16); ``calibration``: normalised input batches
    (N, C, H, W), required for int8 and ignored otherwise. Returns the facts for the sidecar."""
    src, dst = Path(src), Path(dst)
    if mode not in MODES:
        raise ExportError(f"export.quantize={mode!r} is not one of {', '.join(MODES)} for ONNX")
    batches: Iterator[torch.Tensor] | None = None
    if mode == "int8":
        batches = iter(calibration) if calibration is not None else iter(())
        first = next(batches, None)
        if first is None:
            raise ExportError(
                "int8 quantisation needs calibration images: export.calibration_samples must "
                "be > 0 and a training dataset available (data=...)"
            )
        batches = itertools.chain([first], batches)
    if not src.is_file():
        raise ExportError(f"no ONNX model to quantise at {src}")
    if dst.exists() and src.resolve() == dst.resolve():
        raise ExportError(f"the quantised ONNX path {dst} must differ from the fp32 one")
    dst.parent.mkdir(parents=True, exist_ok=True)
    images = 0
    try:
        with quiet():
            if batches is not None:
                images = _int8(src, dst, batches, reduce_range)
            elif mode == "dynamic":
                _dynamic(src, dst, reduce_range)
            else:
                _fp16(src, dst)
            _strip_node_metadata(dst)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"ONNX {mode} quantisation failed: {first_line(exc)}") from exc
    return {
        "quantize": mode,
        "calibration_images": images,
        "reduce_range": bool(reduce_range) and mode != "fp16",
        "per_channel": mode in ("int8", "dynamic"),
        "cpu": cpu_vnni(),
    }
