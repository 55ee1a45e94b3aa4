"""What every exported model looks like: one input, three outputs; shared helpers."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from io import StringIO
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger("fersuite.export")

INPUT_NAME = "image"
OUTPUT_NAMES: tuple[str, str, str] = ("expression", "valence", "arousal")
#: The file each export format writes (beside its ``model.json`` sidecar); its suffix is how
#: evaluation and prediction tell which runtime reads an exported model.
FILES = {"onnx": "model.onnx", "torchscript": "model.pt", "executorch": "model.pte"}


def exported_format(path: str | os.PathLike[str]) -> str | None:
    """The export format of a model file by its suffix (any name, e.g. ``best.onnx``); None
    for any other file (a checkpoint)."""
    suffix = Path(path).suffix.lower()
    return next((fmt for fmt, name in FILES.items() if Path(name).suffix == suffix), None)


class TupleOutput(nn.Module):
    """``net`` with a plain tuple output ``(expression, valence, arousal)`` for the exporters."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.net(x)
        return out.expression, out.valence, out.arousal


@contextmanager
def quiet() -> Iterator[StringIO]:
    """Swallow the exporters' progress prints (kept for the log at debug level)."""
    buf = StringIO()
    noisy = [logging.getLogger(n) for n in ("onnx_ir", "onnxscript", "torch.onnx")]
    levels = [lg.level for lg in noisy]
    for lg in noisy:
        lg.setLevel(logging.WARNING)
    try:
        with redirect_stdout(buf), warnings.catch_warnings():
            # torch.jit.* are deprecated (FutureWarning); the choice is logged once instead.
            warnings.filterwarnings("ignore", message=r".*torch\.jit.*", category=FutureWarning)
            yield buf
    finally:
        for lg, level in zip(noisy, levels, strict=True):
            lg.setLevel(level)
    if buf.getvalue().strip():
        log.debug("exporter output:\n%s", buf.getvalue())


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__
