"""TorchScript export (``torch.jit.trace``) and loading.

TorchScript is deprecated in recent torch releases (still loadable with ``torch.jit.load`` and
from C++); ONNX is the primary format.

A ``.pt`` may come from someone else, and a TorchScript program can reach outside the model:
``torch.save`` (``aten::save``) writes a file, ``torch.from_file`` (``aten::from_file``) reads
or maps one, other namespaces talk to the network or the profiler. :class:`TorchScriptModel`
therefore refuses, with one line naming the file and the reason, a program that

* defines ``__setstate__`` (``torch.jit.load`` runs it while loading; the archive's code is
  read before loading, so such a file never runs), or
* calls, in any method or hook of any submodule (functions inlined), an operator outside the
  ``aten`` and ``prim`` namespaces or one of :data:`DENIED_OPS`.

A traced model (what ``fersuite-export`` writes) uses only ``aten``/``prim`` operators.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fersuite.deploy.base import ExportError, first_line, log, quiet
from fersuite.types import AffectOutput

__all__ = ["DENIED_OPS", "TorchScriptModel", "check_program", "export_torchscript"]

#: Operators of the allowed namespaces that touch files.
DENIED_OPS = frozenset({"aten::save", "aten::from_file"})
_NAMESPACES = ("aten", "prim")
_SETSTATE = re.compile(r"\bdef\s+__setstate__\b")


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


def _archive_code(path: Path) -> Iterator[tuple[str, str]]:
    """(entry name, source) of each TorchScript code file in the archive, read without loading."""
    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if "/code/" in name and name.endswith(".py"):
                    yield name, archive.read(name).decode("utf-8", errors="replace")
    except (zipfile.BadZipFile, OSError) as exc:
        raise ExportError(f"{path}: not a TorchScript archive ({first_line(exc)})") from exc


def _nodes(block: Any) -> Iterator[Any]:
    for node in block.nodes():
        yield node
        for inner in node.blocks():
            yield from _nodes(inner)


def _graphs(module: torch.jit.ScriptModule) -> Iterator[tuple[str, Any]]:
    """(qualified name, inlined graph) of every method and hook of every submodule."""
    for prefix, sub in module.named_modules():
        c = sub._c
        methods = [(name, c._get_method(name)) for name in c._method_names()]
        hooks = [*c._get_forward_pre_hooks(), *c._get_forward_hooks()]
        for name, fn in [*methods, *((h.name, h) for h in hooks)]:
            graph = fn.graph.copy()
            torch._C._jit_pass_inline(graph)
            yield f"{prefix or type(module).__name__}.{name}", graph


def check_program(module: torch.jit.ScriptModule, source: str) -> None:
    """Raise :class:`ExportError` when ``module`` calls an operator a model has no use for."""
    for where, graph in _graphs(module):
        for node in _nodes(graph):
            kind = node.kind()
            if kind in DENIED_OPS or kind.split("::", 1)[0] not in _NAMESPACES:
                raise ExportError(
                    f"{source}: refused: {where} calls {kind}, which a model does not need "
                    f"(a TorchScript model may use only {'/'.join(_NAMESPACES)} operators, "
                    f"not {', '.join(sorted(DENIED_OPS))})"
                )


class TorchScriptModel:
    """A saved TorchScript module called like a fersuite model: ``model(x) -> AffectOutput``.
    The file is checked first (module doc): nothing in it runs unless it passes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        path = Path(path)
        for name, code in _archive_code(path):
            if _SETSTATE.search(code):
                raise ExportError(
                    f"{path}: refused: {name} defines __setstate__, code that torch.jit.load "
                    "would run while loading (a traced model has none)"
                )
        try:
            with quiet():
                module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise ExportError(f"{path}: cannot load TorchScript: {first_line(exc)}") from exc
        check_program(module, str(path))
        self.module = module.eval()

    def __call__(self, x: torch.Tensor) -> AffectOutput:
        e, v, a = self.module(x)
        return AffectOutput(e, v, a)
