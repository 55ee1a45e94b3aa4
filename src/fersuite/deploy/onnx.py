"""ONNX export (dynamo exporter, legacy fallback) and an ONNX Runtime model runner.

The dynamo exporter (``torch.export`` + onnxscript) is used with
``dynamic_shapes={"x": {0: Dim("N", min=1, max=max_batch)}}``; when it fails for a model, the
legacy TorchScript-based exporter with ``dynamic_axes`` is used instead and both the choice
and the reason are recorded (``exporter=auto``). The file is self-contained (no external data).

:class:`OnnxModel` reads a file as someone else's (:func:`read_onnx`): at most
:data:`MAX_BYTES`, a ``ModelProto`` with fersuite's interface (input ``image``, outputs
``expression``/``valence``/``arousal``, the card's shapes, float32), weights only beside it;
anything else is an :class:`~fersuite.errors.UntrustedFileError` before ONNX Runtime loads it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from google.protobuf.message import DecodeError
from torch import nn

from fersuite.card import BOUNDS, ModelCard
from fersuite.deploy.base import INPUT_NAME, OUTPUT_NAMES, first_line, log, quiet
from fersuite.errors import ExportError, UntrustedFileError
from fersuite.types import AffectOutput

__all__ = ["MAX_BYTES", "OnnxModel", "export_onnx", "read_onnx"]


#: The largest ``.onnx`` read (protobuf's own limit: a larger file cannot be one message), and
#: the most bytes its external data files (beside it) may hold in all.
MAX_BYTES = 2 * 1024**3
#: ``onnx.TensorProto`` element types by number (for messages); float32 is 1.
_FLOAT = 1
_DTYPES = {
    0: "undefined", 1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32",
    7: "int64", 8: "string", 9: "bool", 10: "float16", 11: "float64", 12: "uint32",
    13: "uint64", 14: "complex64", 15: "complex128", 16: "bfloat16",
}  # fmt: skip


def _show(text: str) -> str:
    """A name or dimension symbol from the file: quoted, short, on one line."""
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _names(names: list[str]) -> str:
    more = ", ..." if len(names) > 5 else ""
    return "[" + ", ".join(_show(n) for n in names[:5]) + more + "]"


def _dims(value_info: Any) -> list[int | str] | None:
    """The declared shape of a graph input/output: ints and symbols (``"N"``; ``"?"`` when
    unnamed), None when it declares none."""
    tensor = value_info.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return [
        int(d.dim_value) if d.WhichOneof("value") == "dim_value" else (d.dim_param or "?")
        for d in tensor.shape.dim
    ]


def _shape_text(dims: list[int | str] | None) -> str:
    if dims is None:
        return "none"
    return "[" + ", ".join(str(d) if isinstance(d, int) else _show(d) for d in dims) + "]"


class _Interface:
    """The interface fersuite-export writes: one float32 input ``image`` ``[N, C, S, S]`` and
    the float32 outputs ``expression`` ``[N, K]``, ``valence`` and ``arousal`` ``[N]`` (or
    ``[N, 1]``); ``N`` dynamic or 1; ``C``, ``S`` and ``K`` the model card's (without a card:
    within :data:`fersuite.card.BOUNDS`)."""

    def __init__(self, path: Path, card: ModelCard | None) -> None:
        self.path = path
        self.card = card

    def refuse(self, part: str, got: str, expected: str) -> UntrustedFileError:
        return UntrustedFileError(f"{self.path}: {part}: {got}; expected {expected}")

    def _float(self, part: str, value_info: Any) -> None:
        which = value_info.type.WhichOneof("value")
        if which != "tensor_type":
            raise self.refuse(part, f"type {which or 'none'}", "a float32 tensor")
        elem = int(value_info.type.tensor_type.elem_type)
        if elem != _FLOAT:
            raise self.refuse(part, f"dtype {_DTYPES.get(elem, str(elem))}", "float32")

    def _batch(self, part: str, dims: list[int | str]) -> None:
        if isinstance(dims[0], int) and dims[0] != 1:
            raise self.refuse(part, f"batch axis {dims[0]}", "a dynamic batch axis or 1")

    def _input(self, value_info: Any) -> bool:
        part = f"input {INPUT_NAME!r}"
        self._float(part, value_info)
        dims = _dims(value_info)
        if self.card is not None:
            c, s = self.card.in_chans, self.card.input_size
            want = f"shape [N, {c}, {s}, {s}] (the model card's channels and input size)"
        else:
            want = f"shape [N, C, S, S], C in {BOUNDS.channels}, S in 1..{BOUNDS.max_side}"
        ok = dims is not None and len(dims) == 4
        ok = ok and all(isinstance(d, int) for d in dims[1:]) and dims[2] == dims[3]  # type: ignore[index]
        if ok and self.card is not None:
            ok = dims[1:3] == [c, s]  # type: ignore[index]
        elif ok:
            ok = dims[1] in BOUNDS.channels and 1 <= dims[2] <= BOUNDS.max_side  # type: ignore[index,operator]
        if not ok:
            raise self.refuse(part, f"shape {_shape_text(dims)}", want)
        self._batch(part, dims)  # type: ignore[arg-type]
        return dims[0] == 1  # type: ignore[index]

    def _output(self, name: str, value_info: Any) -> None:
        part = f"output {name!r}"
        self._float(part, value_info)
        dims = _dims(value_info)
        if name == "expression":
            k = len(self.card.class_names) if self.card is not None else None
            ok = dims is not None and len(dims) == 2 and isinstance(dims[1], int)
            if k is not None:
                want = f"shape [N, {k}] (one logit per class of the model card)"
                ok = ok and dims[1] == k  # type: ignore[index]
            else:
                want = f"shape [N, K], K in 1..{BOUNDS.max_classes}"
                ok = ok and 1 <= dims[1] <= BOUNDS.max_classes  # type: ignore[index,operator]
        else:
            want = "shape [N] or [N, 1]"
            ok = dims is not None and (len(dims) == 1 or (len(dims) == 2 and dims[1] == 1))
        if not ok:
            raise self.refuse(part, f"shape {_shape_text(dims)}", want)
        self._batch(part, dims)  # type: ignore[arg-type]

    def check(self, graph: Any) -> bool:
        """Refuse a graph whose inputs or outputs differ; True when its batch axis is 1."""
        weights = {t.name for t in graph.initializer}
        inputs = [v for v in graph.input if v.name not in weights]
        if [v.name for v in inputs] != [INPUT_NAME]:
            got = _names([v.name for v in inputs])
            raise self.refuse("inputs", got, f"one input named {INPUT_NAME!r}")
        fixed = self._input(inputs[0])
        names = [v.name for v in graph.output]
        if len(names) != len(OUTPUT_NAMES) or set(names) != set(OUTPUT_NAMES):
            raise self.refuse("outputs", _names(names), f"the outputs {', '.join(OUTPUT_NAMES)}")
        for v in graph.output:
            self._output(v.name, v)
        return fixed

    def external_files(self, graph: Any) -> list[Path]:
        """The files the graph's weights are stored in besides the model; refused when one
        lies outside the model's folder or they hold more than :data:`MAX_BYTES`."""
        folder = self.path.resolve().parent
        files: set[Path] = set()
        for t in graph.initializer:
            if t.data_location != 1:  # TensorProto.EXTERNAL
                continue
            where = next((e.value for e in t.external_data if e.key == "location"), "")
            try:
                target = (folder / where).resolve()
                inside = not Path(where).is_absolute() and target.is_relative_to(folder)
                ok = bool(where) and inside and target.is_file()
            except (OSError, ValueError):  # e.g. a NUL in the name
                ok = False
            if not ok:
                raise self.refuse(
                    f"external data of weight {_show(t.name)}",
                    f"location {_show(where)}",
                    "a file in the model's own folder",
                )
            files.add(target)
        total = sum(f.stat().st_size for f in files)
        if total > MAX_BYTES:
            raise self.refuse("external data", f"{total} bytes", f"at most {MAX_BYTES} bytes")
        return sorted(files)


def read_onnx(path: Path, card: ModelCard | None = None) -> tuple[bytes, bool, bool]:
    """The bytes of ``path`` checked as an exported fersuite model (size, a parsable
    ``ModelProto``, the interface of :class:`_Interface`, weights only beside it), before
    ONNX Runtime sees it; returns (bytes, batch axis fixed at 1, has external data).

    Raises :class:`~fersuite.errors.UntrustedFileError` naming the file and the part."""

    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise UntrustedFileError(
                f"{path}: {size} bytes; expected an ONNX model of at most {MAX_BYTES} bytes"
            )
        data = path.read_bytes()
    except OSError as exc:
        raise UntrustedFileError(f"{path}: cannot read it ({first_line(exc)})") from exc
    try:
        model = onnx.load_model_from_string(data)  # external data is not read
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise UntrustedFileError(f"{path}: not an ONNX model ({first_line(exc)})") from exc
    if not model.HasField("graph"):
        raise UntrustedFileError(f"{path}: not an ONNX model (no graph)")
    interface = _Interface(path, card)
    fixed = interface.check(model.graph)
    external = bool(interface.external_files(model.graph))
    return data, fixed, external


class OnnxModel:
    """An ONNX Runtime session called like a fersuite model: ``model(x) -> AffectOutput``.

    The file is someone else's: :func:`read_onnx` checks it before ONNX Runtime loads it, and
    against ``card`` (the sidecar's: channels, input size, classes) when given; every refusal
    and load failure is an :class:`~fersuite.errors.UntrustedFileError` of one line. A graph
    whose batch axis is 1 is run once per image."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        threads: int | None = None,
        card: ModelCard | None = None,
    ) -> None:

        self.path = Path(path)
        self.card = card
        data, self.batch_one, external = read_onnx(self.path, card)
        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # From memory when self-contained (what was checked is what runs); from the path when
        # the weights are beside it (ONNX Runtime refuses data outside the folder, too).
        source = str(self.path) if external else data
        try:
            self.session = ort.InferenceSession(
                source, sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise UntrustedFileError(f"ONNX Runtime cannot load {self.path}: {first}") from exc
        del data
        self.input_name = INPUT_NAME
        names = [o.name for o in self.session.get_outputs()]
        inputs = [i.name for i in self.session.get_inputs()]
        if inputs != [INPUT_NAME] or sorted(names) != sorted(OUTPUT_NAMES):
            raise UntrustedFileError(
                f"{self.path}: ONNX Runtime sees inputs {_names(inputs)} and outputs "
                f"{_names(names)}; expected {INPUT_NAME!r} and {', '.join(OUTPUT_NAMES)}"
            )

    def run_numpy(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(list(OUTPUT_NAMES), {self.input_name: x})  # type: ignore[no-any-return]

    def _checked(self, outs: list[np.ndarray], n: int) -> AffectOutput:
        """The outputs as an :class:`AffectOutput`, refused unless ``[n, K]``, ``[n]``, ``[n]``
        (``[n, 1]`` taken as ``[n]``) float32 with K the card's class count."""
        k = len(self.card.class_names) if self.card is not None else None
        e, v, a = (np.asarray(o) for o in outs)
        ok = all(o.dtype == np.float32 for o in (e, v, a)) and e.ndim == 2 and e.shape[0] == n
        ok = ok and (k is None or e.shape[1] == k)
        ok = ok and all(o.shape in ((n,), (n, 1)) for o in (v, a))
        if not ok:
            got = ", ".join(f"{o.dtype}{list(o.shape)}" for o in (e, v, a))
            want = f"float32 [{n}, {'K' if k is None else k}], [{n}], [{n}]"
            raise UntrustedFileError(f"{self.path}: outputs {got} for {n} images; expected {want}")
        return AffectOutput(
            torch.from_numpy(e), torch.from_numpy(v.reshape(n)), torch.from_numpy(a.reshape(n))
        )

    def __call__(self, x: torch.Tensor) -> AffectOutput:
        arr = x.detach().cpu().numpy().astype(np.float32, copy=False)
        if not self.batch_one or arr.shape[0] == 1:
            return self._checked(self.run_numpy(arr), arr.shape[0])
        parts = [self._checked(self.run_numpy(arr[i : i + 1]), 1) for i in range(arr.shape[0])]
        return AffectOutput(*(torch.cat(t) for t in zip(*parts, strict=True)))


def onnx_opset(path: Path) -> int:

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
