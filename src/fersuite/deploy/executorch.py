"""ExecuTorch export (``.pte`` with the XNNPACK delegate, fp32 or PT2E int8) and a runner.

The program is exported at batch 1 (``torch.export.export``), lowered with
``executorch.exir.to_edge_transform_and_lower(..., partitioner=[XnnpackPartitioner()])`` and
serialised with ``.to_executorch().buffer``. With calibration images it is first quantised
with PT2E: the XNNPACK quantizer (``get_symmetric_quantization_config(is_per_channel=True)``:
per-channel int8 weights, static int8 activations), torchao's ``prepare_pt2e``, one forward
per calibration batch (exported with a dynamic batch axis for that), ``convert_pt2e``, and
export again at batch 1.

:class:`ExecuTorchModel` loads a ``.pte`` with ``executorch.runtime`` and runs any batch size
by running the batch-1 program once per image.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, redirect_stderr
from io import StringIO
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fersuite.deploy.base import ExportError, first_line, log, quiet
from fersuite.types import AffectOutput

__all__ = ["ExecuTorchModel", "export_executorch"]

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
    "calibration_images"}``; raises :class:`~fersuite.deploy.base.ExportError` (one line)."""
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


class ExecuTorchModel:
    """A ``.pte`` program run by ``executorch.runtime``, called like a fersuite model:
    ``model(x) -> AffectOutput`` for any batch size N (the batch-1 program runs per image).

    ``threads`` sets the size of the runtime's thread pool, which is shared by the whole
    process (``None`` keeps it: one thread per core)."""

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None) -> None:
        self.path = Path(path)
        logs: list[str] = []
        error: BaseException | None = None
        with _runtime_stderr(logs):
            try:
                with _quiet_loggers():  # "experimental API", deprecations on import
                    from executorch.extension.pybindings import portable_lib
                    from executorch.runtime import Runtime

                if threads is not None and portable_lib._threadpool_get_thread_count() != threads:
                    portable_lib._unsafe_reset_threadpool(int(threads))
                self.program = Runtime.get().load_program(self.path)
                names = sorted(self.program.method_names)
                if "forward" not in names:
                    raise ValueError(f"no 'forward' method (has {names})")
                self.method = self.program.load_method("forward")
                meta = self.method.metadata
                if meta.num_inputs() != 1 or meta.num_outputs() != 3:
                    raise ValueError(
                        f"expected 1 input and 3 outputs, got {meta.num_inputs()} and "
                        f"{meta.num_outputs()}"
                    )
                self.input_shape = tuple(int(s) for s in meta.input_tensor_meta(0).sizes())
            except Exception as exc:  # noqa: BLE001 -- raised below, with the runtime's reason
                error = exc
        runtime_lines = [ln for ln in logs if ln.strip() and not ln.startswith(_INFO_SOURCES)]
        if error is not None:
            reason = first_line(error)
            if runtime_lines:  # the runtime says why on stderr, e.g. a wrong file identifier
                reason += f" ({runtime_lines[-1].strip()[:200]})"
            raise ExportError(f"ExecuTorch cannot load {self.path}: {reason}") from error
        for line in runtime_lines:  # anything but the informational lines is passed on
            print(line, file=sys.stderr)

    def __call__(self, x: torch.Tensor) -> AffectOutput:
        x = torch.as_tensor(x).detach().cpu().float()
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape[1:]:
            raise ExportError(
                f"{self.path} expects input (N, {', '.join(map(str, self.input_shape[1:]))}); "
                f"got {tuple(x.shape)}"
            )
        outs = [self.method.execute([x[i : i + 1].contiguous()]) for i in range(x.shape[0])]
        e, v, a = (torch.cat([o[k] for o in outs]).float() for k in range(3))
        return AffectOutput(e, v.reshape(-1), a.reshape(-1))
