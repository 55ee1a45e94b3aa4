"""ONNX export (dynamo exporter, legacy fallback) and an ONNX Runtime model runner.

The dynamo exporter (``torch.export`` + onnxscript) is used with
``dynamic_shapes={"x": {0: Dim("N", min=1, max=max_batch)}}``; when it fails for a model, the
legacy TorchScript-based exporter with ``dynamic_axes`` is used instead and both the choice
and the reason are recorded (``exporter=auto``). The file is self-contained (no external data).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fersuite.deploy.base import INPUT_NAME, OUTPUT_NAMES, ExportError, first_line, log, quiet
from fersuite.types import AffectOutput

__all__ = ["OnnxModel", "export_onnx"]


class OnnxModel:
    """An ONNX Runtime session called like a fersuite model: ``model(x) -> AffectOutput``."""

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise ExportError(f"ONNX Runtime cannot load {path}: {first}") from exc
        self.input_name = self.session.get_inputs()[0].name
        names = [o.name for o in self.session.get_outputs()]
        missing = [n for n in OUTPUT_NAMES if n not in names]
        if missing:
            raise ExportError(f"{path} lacks outputs {missing} (has {names})")

    def run_numpy(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(list(OUTPUT_NAMES), {self.input_name: x})  # type: ignore[no-any-return]

    def __call__(self, x: torch.Tensor) -> AffectOutput:
        arr = x.detach().cpu().numpy().astype(np.float32, copy=False)
        e, v, a = (torch.from_numpy(np.asarray(o)) for o in self.run_numpy(arr))
        return AffectOutput(e, v, a)


def onnx_opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    return next(int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _export_dynamo(
    wrapper: nn.Module, example: torch.Tensor, path: Path, opset: int, max_batch: int
) -> None:
    batch = torch.export.Dim("N", min=1, max=max_batch)
    with quiet(), torch.no_grad():
        torch.onnx.export(
            wrapper,
            (example,),
            str(path),
            dynamo=True,
            dynamic_shapes={"x": {0: batch}},
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            opset_version=opset,
            external_data=False,
            verbose=False,
        )


def _export_legacy(wrapper: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    axes = {name: {0: "N"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    with quiet(), torch.no_grad():
        torch.onnx.export(
            wrapper,
            (example,),
            str(path),
            dynamo=False,
            dynamic_axes=axes,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            opset_version=opset,
            do_constant_folding=True,
        )


def export_onnx(
    wrapper: nn.Module,
    example: torch.Tensor,
    path: Path,
    exporter: str = "auto",
    opset: int = 18,
    max_batch: int = 64,
) -> dict[str, Any]:
    """Export to ``path`` (``exporter``: auto | dynamo | legacy); returns
    ``{"exporter", "opset", "fallback_reason"}``."""
    reason: str | None = None
    if exporter in ("auto", "dynamo"):
        try:
            _export_dynamo(wrapper, example, path, opset, max_batch)
            return {"exporter": "dynamo", "opset": onnx_opset(path), "fallback_reason": None}
        except Exception as exc:  # any exporter failure -> fallback or report
            reason = first_line(exc)
            if exporter == "dynamo":
                raise ExportError(f"the dynamo ONNX exporter failed: {reason}") from exc
            log.warning("dynamo exporter failed (%s); falling back to the legacy exporter", reason)
    try:
        _export_legacy(wrapper, example, path, opset)
    except Exception as exc:
        raise ExportError(f"the legacy ONNX exporter failed: {first_line(exc)}") from exc
    return {"exporter": "legacy", "opset": onnx_opset(path), "fallback_reason": reason}
