"""TorchScript export (``torch.jit.trace``) and loading.

TorchScript is deprecated in recent torch releases (still loadable with ``torch.jit.load`` and
from C++); ONNX is the primary format.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fersuite.deploy.base import ExportError, first_line, log, quiet
from fersuite.types import AffectOutput

__all__ = ["TorchScriptModel", "export_torchscript"]


def export_torchscript(wrapper: nn.Module, example: torch.Tensor, path: Path) -> dict[str, Any]:
    """``torch.jit.trace`` + save; returns ``{"exporter": "torchscript-trace"}``."""
    log.warning("TorchScript is deprecated by PyTorch; prefer export.format=onnx")
    try:
        with quiet(), torch.no_grad():
            traced = torch.jit.trace(wrapper, (example,), check_trace=False)
            torch.jit.save(traced, str(path))
    except Exception as exc:
        raise ExportError(f"TorchScript tracing failed: {first_line(exc)}") from exc
    return {"exporter": "torchscript-trace", "opset": None, "fallback_reason": None}


class TorchScriptModel:
    """A saved TorchScript module called like a fersuite model: ``model(x) -> AffectOutput``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        with quiet():
            self.module = torch.jit.load(str(path), map_location="cpu").eval()

    def __call__(self, x: torch.Tensor) -> AffectOutput:
        e, v, a = self.module(x)
        return AffectOutput(e, v, a)
