"""ExecuTorch export (``.pte`` with the XNNPACK delegate, fp32 or PT2E int8) and a runner.

The program is exported at batch 1 (``torch.export.export``), lowered with
``executorch.exir.to_edge_transform_and_lower(..., partitioner=[XnnpackPartitioner()])`` and
serialised with ``.to_executorch().buffer``. With calibration images it is first quantised
with PT2E: the XNNPACK quantizer (``get_symmetric_quantization_config(is_per_channel=True)``:
per-channel int8 weights, static int8 activations), torchao's ``prepare_pt2e``, one forward
per calibration batch (exported with a dynamic batch axis for that), ``convert_pt2e``, and
export again at batch 1.

:class:`ExecuTorchModel` loads a ``.pte`` with ``executorch.runtime`` and runs any batch size
by running the batch-1 program once per image. The file is someone else's: at most
:data:`MAX_BYTES`, loaded with the runtime's full flatbuffer verification, and its ``forward``
method's declared interface (one float32 input ``[1, C, S, S]``, float32 outputs ``[1, K]``,
``[1]``, ``[1]``; C, S, K the model card's) checked before the method is loaded; anything else
is an :class:`~fersuite.errors.UntrustedFileError` of one line.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, redirect_stderr
from io import StringIO
from pathlib import Path
from typing import Any

import torch
from flatbuffers.table import Table
from torch import nn

from fersuite.card import BOUNDS, ModelCard
from fersuite.deploy.base import first_line, log, quiet
from fersuite.errors import ExportError, UntrustedFileError
from fersuite.types import AffectOutput

__all__ = ["MAX_BYTES", "MAX_PLANNED_BYTES", "ExecuTorchModel", "export_executorch"]

#: The largest ``.pte`` read.
MAX_BYTES = 2 * 1024**3
#: ExecuTorch's ``ScalarType`` numbers (for messages); the model's tensors are Float (6).
_FLOAT = 6
_DTYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16",
           6: "float32", 7: "float64", 11: "bool", 15: "bfloat16"}  # fmt: skip

#: Loggers of the export stack that report progress or deprecations at INFO/WARNING.
_NOISY_LOGGERS = ("executorch", "torchao", "torch._export", "torch.export", "torch.utils._pytree")
#: Sources of the runtime's informational stderr lines: its CPU probe (the first time the
#: thread pool starts) and thread-pool resets.
_INFO_SOURCES = ("[cpuinfo_utils.cpp:", "[threadpool.cpp:")


@contextmanager
def _quiet_loggers() -> Iterator[None]:
    """The ExecuTorch/torchao loggers at ERROR level, warnings ignored."""
    noisy = [logging.getLogger(n) for n in _NOISY_LOGGERS]
    levels = [lg.level for lg in noisy]
    for lg in noisy:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(noisy, levels, strict=True):
            lg.setLevel(level)


@contextmanager
def _quiet_export() -> Iterator[None]:
    """:func:`fersuite.deploy.base.quiet` (the exporters' prints) plus :func:`_quiet_loggers`."""
    with quiet(), _quiet_loggers():
        yield


@contextmanager
def _runtime_stderr(lines: list[str]) -> Iterator[None]:
    """Collect into ``lines`` what the runtime writes on stderr: its C++ log goes to
    ``sys.stderr`` (through the bindings) or straight to file descriptor 2."""
    buf = StringIO()
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable descriptor 2
        saved = -1
    with tempfile.TemporaryFile() as tmp:
        if saved >= 0:
            os.dup2(tmp.fileno(), 2)
        try:
            with redirect_stderr(buf):
                yield
        finally:
            if saved >= 0:
                os.dup2(saved, 2)
                os.close(saved)
            tmp.seek(0)
            lines.extend(tmp.read().decode(errors="replace").splitlines())
            lines.extend(buf.getvalue().splitlines())


def _check_batch(batch: Any, shape: tuple[int, ...]) -> torch.Tensor:
    batch = torch.as_tensor(batch).detach().float()
    if batch.dim() == len(shape):  # one image
        batch = batch.unsqueeze(0)
    if tuple(batch.shape[1:]) != shape:
        raise ExportError(
            f"calibration batch of shape {tuple(batch.shape)}; expected (N, "
            f"{', '.join(map(str, shape))})"
        )
    return batch


def _calibration_batches(
    calibration: Iterable[torch.Tensor], shape: tuple[int, ...]
) -> Iterator[torch.Tensor]:
    """The batches, checked; the first is read before anything is exported (fail fast)."""
    batches = iter(calibration)
    first = next(batches, None)
    if first is None:
        raise ExportError("int8 ExecuTorch export: the calibration data holds no image")
    yield _check_batch(first, shape)
    for batch in batches:
        yield _check_batch(batch, shape)


def _calibrate(
    wrapper: nn.Module, example: torch.Tensor, batches: Iterator[torch.Tensor]
) -> tuple[nn.Module, int]:
    """PT2E static int8 with the XNNPACK quantizer; returns (quantised module, images seen)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    config = get_symmetric_quantization_config(is_per_channel=True)  # static activations
    quantizer = XNNPACKQuantizer().set_global(config)
    # Calibrated with a dynamic batch axis: the observed graph runs whole batches (one image
    # at a time was ~40x slower); the converted module is re-exported at batch 1 afterwards.
    batch_dim = torch.export.Dim("batch", min=1, max=1024)
    spec = {"x": {0: batch_dim}}
    two = example.expand(2, *example.shape[1:]).contiguous()
    graph = torch.export.export(wrapper, (two,), dynamic_shapes=spec).module()
    prepared = prepare_pt2e(graph, quantizer)  # type: ignore[arg-type]
    n = 0
    with torch.no_grad():
        for batch in batches:
            for chunk in batch.split(1024):
                prepared(chunk)
                n += int(chunk.shape[0])
    if n == 0:
        raise ExportError("int8 ExecuTorch export: the calibration data holds no image")
    return convert_pt2e(prepared), n


def export_executorch(
    wrapper: nn.Module,
    example: torch.Tensor,
    path: Path,
    calibration: Iterable[torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Write a batch-1 ``.pte`` (XNNPACK delegate) of ``wrapper`` (a
    :class:`~fersuite.deploy.base.TupleOutput`) to ``path``: fp32, or int8 (PT2E, static
    activations) calibrated on every image of ``calibration`` (normalised batches, any N).

    Returns ``{"exporter", "backend", "opset", "fallback_reason", "quantize",
    "calibration_images"}``; raises :class:`~fersuite.errors.ExportError` (one line)."""
    x = example[:1].detach().float().contiguous()
    quantize = None if calibration is None else "int8"
    start = time.perf_counter()
    n = 0
    batches = None
    if calibration is not None:  # the first batch is checked before the (slow) export
        batches = _calibration_batches(calibration, tuple(x.shape[1:]))
        batches = itertools.chain([next(batches)], batches)
    try:
        with _quiet_export():
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import (
                XnnpackPartitioner,
            )
            from executorch.exir import to_edge_transform_and_lower

            module = wrapper.eval()
            if batches is not None:
                module, n = _calibrate(module, x, batches)
            with torch.no_grad():
                program = torch.export.export(module, (x,))
            lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
            buffer = lowered.to_executorch().buffer
    except ExportError:
        raise
    except Exception as exc:  # any failure of torch.export / PT2E / lowering
        what = "int8 " if quantize else ""
        raise ExportError(f"the {what}ExecuTorch export failed: {first_line(exc)}") from exc
    Path(path).write_bytes(buffer)
    log.info(
        "ExecuTorch %s export: %.1f s, %d bytes",
        quantize or "fp32",
        time.perf_counter() - start,
        len(buffer),
    )
    return {
        "exporter": "executorch",
        "backend": "xnnpack",
        "opset": None,
        "fallback_reason": None,
        "quantize": quantize,
        "calibration_images": n,
    }


#: The identifier of an ExecuTorch program (the flatbuffer's, bytes 4..8).
_IDENTIFIER = b"ET12"
#: The most memory a program's ``forward`` may plan for its activations.
MAX_PLANNED_BYTES = 1 << 30
#: A name the runtime may write to its log (operators, backends, methods): the runtime's
#: Python binding aborts the process on a log line that is not UTF-8, so only these.
_PRINTABLE = re.compile(rb"[\x20-\x7e]{1,200}")


def _plans(data: bytes) -> Iterator[Any]:
    """The ``ExecutionPlan`` tables of a program flatbuffer (schema ``program.fbs``; read only
    after the runtime's verifier accepted the buffer)."""
    root = Table(data, int.from_bytes(data[:4], "little"))
    yield from _vector(root, 1)  # Program.execution_plan


def _vector(table: Any, field: int) -> list[Any]:
    """The tables of vector ``field`` (its index in the schema) of ``table``."""
    offset = table.Offset(4 + 2 * field)
    if not offset:
        return []
    start, n = table.Vector(offset), table.VectorLen(offset)
    return [Table(table.Bytes, table.Indirect(start + 4 * k)) for k in range(n)]


def _string(table: Any, field: int) -> bytes:
    offset = table.Offset(4 + 2 * field)
    return bytes(table.String(offset + table.Pos)) if offset else b""


def _check_names_and_memory(path: Path, data: bytes) -> None:
    """Refuse a program whose method, operator or backend names are not printable ASCII, or
    whose methods plan more than :data:`MAX_PLANNED_BYTES` of memory."""
    for plan in _plans(data):
        named = [("method name", _string(plan, 0))]  # ExecutionPlan.name
        named += [("operator name", _string(op, 0)) for op in _vector(plan, 6)]
        named += [("operator overload", _string(op, 1)) for op in _vector(plan, 6)]
        named += [("backend id", _string(d, 0)) for d in _vector(plan, 7)]
        for part, name in named:
            if name and not _PRINTABLE.fullmatch(name):
                raise _refuse(path, part, repr(name[:40]), "printable ASCII of 1..200 characters")
        offset = plan.Offset(4 + 2 * 8)  # ExecutionPlan.non_const_buffer_sizes: [int64]
        if offset:
            start, n = plan.Vector(offset), plan.VectorLen(offset)
            sizes = [int.from_bytes(data[start + 8 * k : start + 8 * k + 8], "little", signed=True)
                     for k in range(n)]  # fmt: skip
            if any(b < 0 for b in sizes) or sum(sizes) > MAX_PLANNED_BYTES:
                raise _refuse(
                    path, "planned memory", f"{sum(sizes)} bytes", f"at most {MAX_PLANNED_BYTES}"
                )


def _refuse(path: Path, part: str, got: str, expected: str) -> UntrustedFileError:
    return UntrustedFileError(f"{path}: {part}: {got}; expected {expected}")


def _check_method(
    path: Path, meta: Any, card: ModelCard | None
) -> tuple[tuple[int, ...], tuple[tuple[int, ...], ...]]:
    """Refuse a ``forward`` whose declared interface is not fersuite's (see the module
    docstring); returns the input shape ``(1, C, S, S)`` and the three output shapes."""
    if meta.num_inputs() != 1 or meta.num_outputs() != 3:
        got = f"{meta.num_inputs()} inputs and {meta.num_outputs()} outputs"
        raise _refuse(
            path, "forward", got, "1 input (image) and 3 outputs (expression, valence, arousal)"
        )
    if card is not None:
        c, s, k = card.in_chans, card.input_size, len(card.class_names)
        want_in = f"shape (1, {c}, {s}, {s}) (the model card's channels and input size)"
        want_out = f"shape (1, {k}) (one logit per class of the model card)"
    else:
        c = s = k = None
        want_in = f"shape (1, C, S, S), C in {BOUNDS.channels}, S in 1..{BOUNDS.max_side}"
        want_out = f"shape (1, K), K in 1..{BOUNDS.max_classes}"
    parts = [("input 0 (image)", meta.input_tensor_meta, 0)] + [
        (f"output {i} ({name})", meta.output_tensor_meta, i)
        for i, name in enumerate(("expression", "valence", "arousal"))
    ]
    shapes = []
    for part, tensor_meta, i in parts:
        try:
            info = tensor_meta(i)
            dtype, shape = int(info.dtype()), tuple(int(d) for d in info.sizes())
        except Exception as exc:  # not a tensor
            raise _refuse(path, part, first_line(exc), "a float32 tensor") from exc
        if dtype != _FLOAT:
            raise _refuse(path, part, f"dtype {_DTYPES.get(dtype, str(dtype))}", "float32")
        shapes.append(shape)
    (x, e, v, a) = shapes
    ok = len(x) == 4 and x[0] == 1 and x[2] == x[3]
    if ok and card is not None:
        ok = x[1:3] == (c, s)
    elif ok:
        ok = x[1] in BOUNDS.channels and 1 <= x[2] <= BOUNDS.max_side
    if not ok:
        raise _refuse(path, parts[0][0], f"shape {x}", want_in)
    ok = len(e) == 2 and e[0] == 1
    ok = ok and (e[1] == k if k is not None else 1 <= e[1] <= BOUNDS.max_classes)
    if not ok:
        raise _refuse(path, parts[1][0], f"shape {e}", want_out)
    for (part, _, _), shape in zip(parts[2:], (v, a), strict=True):
        if shape not in ((1,), (1, 1)):
            raise _refuse(path, part, f"shape {shape}", "shape (1,) or (1, 1)")
    return x, (e, v, a)


class ExecuTorchModel:
    """A ``.pte`` program run by ``executorch.runtime``, called like a fersuite model:
    ``model(x) -> AffectOutput`` for any batch size N (the batch-1 program runs per image).

    ``threads`` sets the size of the runtime's thread pool, which is shared by the whole
    process (``None`` keeps it: one thread per core). ``card`` (the sidecar's) is what the
    program's input and outputs must match; an unreadable file or another interface is an
    :class:`~fersuite.errors.UntrustedFileError`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        threads: int | None = None,
        card: ModelCard | None = None,
    ) -> None:
        self.path = Path(path)
        self.card = card
        try:
            size = self.path.stat().st_size
        except OSError as exc:
            raise UntrustedFileError(f"{self.path}: cannot read it ({first_line(exc)})") from exc
        if size > MAX_BYTES:
            raise UntrustedFileError(
                f"{self.path}: {size} bytes; expected an ExecuTorch program of at most "
                f"{MAX_BYTES} bytes"
            )
        with _quiet_loggers():  # "experimental API", deprecations on import
            from executorch.extension.pybindings import portable_lib
            from executorch.runtime import Runtime, Verification

        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise UntrustedFileError(f"{self.path}: cannot read it ({first_line(exc)})") from exc
        if data[4:8] != _IDENTIFIER:  # the runtime would log these bytes as they are
            raise UntrustedFileError(
                f"ExecuTorch cannot load {self.path}: not an ExecuTorch program (identifier "
                f"{data[4:8]!r}; expected {_IDENTIFIER!r})"
            )

        def load_program() -> Any:
            if threads is not None and portable_lib._threadpool_get_thread_count() != threads:
                portable_lib._unsafe_reset_threadpool(int(threads))
            # the flatbuffer verifier runs: the tables read below are within the buffer
            program = Runtime.get().load_program(
                data, verification=Verification.InternalConsistency
            )
            names = sorted(program.method_names)
            if "forward" not in names:
                raise ValueError(f"no 'forward' method (has {names[:5]})")
            return program, program.metadata("forward")

        self.program, meta = self._runtime(load_program)
        # the declared interface, before the method (and its planned memory) is loaded
        self.input_shape, self.output_shapes = _check_method(self.path, meta, card)
        try:
            _check_names_and_memory(self.path, data)
        except UntrustedFileError:
            raise
        except Exception as exc:  # a table the walk cannot read
            raise _refuse(self.path, "program", first_line(exc), "a readable program") from exc
        self.method = self._runtime(lambda: self.program.load_method("forward"))

    def _runtime(self, step: Callable[[], Any]) -> Any:
        """``step()`` with the runtime's stderr collected: a failure is an
        :class:`~fersuite.errors.UntrustedFileError` with the runtime's reason; other lines
        than the informational ones are passed on."""
        logs: list[str] = []
        error: BaseException | None = None
        with _runtime_stderr(logs):
            try:
                result = step()
            except Exception as exc:  # noqa: BLE001 -- raised below, with the runtime's reason
                error = exc
        runtime_lines = [ln for ln in logs if ln.strip() and not ln.startswith(_INFO_SOURCES)]
        if error is not None:
            reason = first_line(error)
            if runtime_lines:  # the runtime says why on stderr, e.g. a wrong file identifier
                reason += f" ({runtime_lines[-1].strip()[:200]})"
            raise UntrustedFileError(f"ExecuTorch cannot load {self.path}: {reason}") from error
        for line in runtime_lines:
            print(line, file=sys.stderr)
        return result

    def __call__(self, x: torch.Tensor) -> AffectOutput:
        x = torch.as_tensor(x).detach().cpu().float()
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape[1:]:
            raise ExportError(
                f"{self.path} expects input (N, {', '.join(map(str, self.input_shape[1:]))}); "
                f"got {tuple(x.shape)}"
            )
        outs = [self.method.execute([x[i : i + 1].contiguous()]) for i in range(x.shape[0])]
        for out in outs[:1]:  # what runs must be what the program declared
            ok = isinstance(out, list | tuple) and len(out) == len(self.output_shapes)
            ok = ok and all(
                isinstance(t, torch.Tensor) and t.dtype == torch.float32 and tuple(t.shape) == s
                for t, s in zip(out, self.output_shapes, strict=False)
            )
            if not ok:
                items = out if isinstance(out, list | tuple) else [out]
                got = [
                    tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                    for t in items
                ]
                raise UntrustedFileError(
                    f"{self.path}: forward returned {got}; expected float32 tensors of shapes "
                    f"{list(self.output_shapes)}"
                )
        e, v, a = (torch.cat([o[k] for o in outs]).float() for k in range(3))
        return AffectOutput(e, v.reshape(-1), a.reshape(-1))
