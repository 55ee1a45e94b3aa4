"""Wall-clock latency and throughput of a model in inference mode.

Both functions put every submodule in eval mode, run under ``torch.inference_mode()`` (no
autograd state is created, the model's parameters and gradients are never touched) and restore
each submodule's ``training`` flag and torch's intra-op thread count afterwards. A model wrapped
by ``torch.compile`` is timed as compiled (warm-up calls absorb compilation).

Timings use ``time.perf_counter``; on CUDA the device is synchronised before and after every
timed region so that asynchronous kernel launches are not mistaken for completed work.

:data:`LATENCY_PROTOCOL` is fersuite's one definition of a latency figure, shared by the training
callback (``callbacks.efficiency``) and ``fersuite-profile``: batch-1 latency on the CPU with one
intra-op thread (reproducible, and comparable across machines with different core counts),
median of 50 timed calls after 10 warm-up calls; throughput at batch 64 on the same device and
threads. :func:`measure_speed` measures both that way; the device and thread count are reported
with every figure.
"""

from __future__ import annotations

import copy
import math
import os
import resource
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from fersuite.profiling.macs import eval_mode, model_device_dtype

__all__ = [
    "LATENCY_PROTOCOL",
    "LatencyProtocol",
    "LatencyStats",
    "ThroughputStats",
    "measure_latency",
    "measure_speed",
    "measure_throughput",
]


@dataclass(frozen=True)
class LatencyProtocol:
    """How a latency / throughput figure is measured (see the module doc for the defaults)."""

    device: str = "cpu"
    threads: int = 1
    warmup: int = 10
    runs: int = 50
    batch_size: int = 64
    throughput_warmup: int = 2
    throughput_runs: int = 5


#: The defaults of ``callbacks.efficiency`` and ``profile.*`` (checked by the tests).
LATENCY_PROTOCOL = LatencyProtocol()


@dataclass(frozen=True)
class LatencyStats:
    """Per-call latency of ``model(x)`` over ``runs`` timed calls (after warm-up).

    ``threads`` is the torch intra-op thread count in effect during the measurement;
    ``device`` is e.g. ``"cpu"`` or ``"cuda:0"``.
    """

    median_ms: float
    p90_ms: float
    mean_ms: float
    runs: int
    threads: int
    device: str


@dataclass(frozen=True)
class ThroughputStats:
    """Images per second at a given batch size, and the memory needed to get there.

    ``peak_memory_mb`` (MiB) depends on ``memory_source``:

    * ``"cuda_max_allocated"``: ``torch.cuda.max_memory_allocated`` over warm-up and timed runs
      (peak stats are reset first), i.e. weights + activations + workspace held by tensors.
    * ``"cpu_rss_increase"``: peak resident set size sampled from ``/proc/self/statm`` every
      2 ms during warm-up and timed runs, minus the RSS just before (Linux).
    * ``"cpu_maxrss_increase"``: increase of the process high-water mark
      ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (fallback where ``/proc`` is missing); a lower
      bound, 0 when the process had already peaked higher earlier.
    """

    images_per_s: float
    batch_size: int
    peak_memory_mb: float
    memory_source: str
    device: str


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _placed(model: nn.Module, device: str | torch.device | None) -> tuple[nn.Module, torch.device]:
    """The model on ``device``: itself if already there, else a deep copy moved there."""
    own_device, _ = model_device_dtype(model)
    if device is None:
        return model, own_device
    target = torch.device(device)
    if target.type == "cuda" and target.index is None:
        target = torch.device("cuda", torch.cuda.current_device())
    if target == own_device:
        return model, target
    return copy.deepcopy(model).to(target), target


def _input(model: nn.Module, shape: Sequence[int], device: torch.device) -> Tensor:
    _, dtype = model_device_dtype(model)
    # A private generator: measuring must not move the global RNG of a training run.
    x = torch.randn(tuple(shape), generator=torch.Generator().manual_seed(0))
    return x.to(device=device, dtype=dtype)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _check_counts(warmup: int, runs: int) -> None:
    if warmup < 0 or runs < 1:
        raise ValueError(f"need warmup >= 0 and runs >= 1, got warmup={warmup}, runs={runs}")


@contextmanager
def _num_threads(threads: int | None) -> Iterator[int]:
    """Temporarily ``torch.set_num_threads(threads)``; yields the count in effect."""
    previous = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _maxrss_bytes() -> int:
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # bytes on macOS, KiB on Linux


class _CpuPeakMemory:
    """Peak RSS increase over a ``with`` block (sampling thread, or ru_maxrss fallback)."""

    def __init__(self, interval_s: float = 0.002) -> None:
        self.interval_s = interval_s
        self.source = "cpu_rss_increase" if _rss_bytes() is not None else "cpu_maxrss_increase"
        self.increase_bytes = 0
        self._stop = threading.Event()
        self._peak = 0
        self._thread: threading.Thread | None = None
        self._baseline = 0

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._peak = max(self._peak, _rss_bytes() or 0)

    def __enter__(self) -> _CpuPeakMemory:
        if self.source == "cpu_rss_increase":
            self._baseline = self._peak = _rss_bytes() or 0
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        else:
            self._baseline = _maxrss_bytes()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, _rss_bytes() or 0)
        else:
            self._peak = _maxrss_bytes()
        self.increase_bytes = max(0, self._peak - self._baseline)


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    device: str | torch.device | None = None,
    warmup: int = 10,
    runs: int = 50,
    threads: int | None = None,
) -> LatencyStats:
    """Time ``runs`` single forward passes on a random input of ``input_shape`` (batch included).

    Args:
        model: module to time (left unchanged; see the module docstring).
        input_shape: full input shape, e.g. ``(1, 3, 224, 224)`` for batch-1 latency.
        device: where to run; ``None`` means the model's own device. If it differs from the
            model's device, a deep copy of the model is moved there (the original stays put).
        warmup: untimed calls first (cuDNN autotuning, allocator warm-up, compilation).
        runs: timed calls; each is timed individually.
        threads: torch intra-op threads to use during the measurement (restored afterwards);
            ``None`` keeps the current setting. Reported in :attr:`LatencyStats.threads`.
    """
    _check_counts(warmup, runs)
    placed, dev = _placed(model, device)
    x = _input(placed, input_shape, dev)
    times_ms: list[float] = []
    with _num_threads(threads) as used, eval_mode(placed), torch.inference_mode():
        for _ in range(warmup):
            placed(x)
        for _ in range(runs):
            _sync(dev)
            start = time.perf_counter()
            placed(x)
            _sync(dev)
            times_ms.append((time.perf_counter() - start) * 1e3)
    arr = np.asarray(times_ms)
    return LatencyStats(
        median_ms=float(np.median(arr)),
        p90_ms=float(np.percentile(arr, 90)),
        mean_ms=float(arr.mean()),
        runs=runs,
        threads=used,
        device=str(dev),
    )


def measure_throughput(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_size: int = 64,
    device: str | torch.device | None = None,
    warmup: int = 3,
    runs: int = 10,
) -> ThroughputStats:
    """Images per second for ``runs`` back-to-back batches of ``batch_size``, and peak memory.

    Args:
        model: module to time (left unchanged; see the module docstring).
        input_shape: per-sample shape ``(C, H, W)`` (rank <= 3), or a full shape with a leading
            batch dim (rank >= 4) whose batch dim is replaced by ``batch_size``.
        batch_size: images per forward pass.
        device: as in :func:`measure_latency`.
        warmup: untimed batches first.
        runs: timed batches; the device is synchronised only before the first and after the
            last, so throughput includes launch/compute overlap.

    Memory: see :class:`ThroughputStats` (CUDA allocator peak, or CPU RSS increase). On CUDA
    this resets the device's peak-memory statistics.
    """
    _check_counts(warmup, runs)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    shape = tuple(input_shape)
    shape = (batch_size, *shape[1:]) if len(shape) >= 4 else (batch_size, *shape)
    placed, dev = _placed(model, device)
    x = _input(placed, shape, dev)

    cpu_memory = _CpuPeakMemory() if dev.type != "cuda" else None
    if dev.type == "cuda":
        _sync(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    with eval_mode(placed), torch.inference_mode(), cpu_memory or nullcontext():
        for _ in range(warmup):
            placed(x)
        _sync(dev)
        start = time.perf_counter()
        for _ in range(runs):
            placed(x)
        _sync(dev)
        elapsed = time.perf_counter() - start

    if cpu_memory is None:
        peak_mb, source = torch.cuda.max_memory_allocated(dev) / 2**20, "cuda_max_allocated"
    else:
        peak_mb, source = cpu_memory.increase_bytes / 2**20, cpu_memory.source
    return ThroughputStats(
        images_per_s=batch_size * runs / elapsed if elapsed > 0 else math.inf,
        batch_size=batch_size,
        peak_memory_mb=float(peak_mb),
        memory_source=source,
        device=str(dev),
    )


def measure_speed(
    model: nn.Module, sample_shape: Sequence[int], protocol: LatencyProtocol = LATENCY_PROTOCOL
) -> tuple[LatencyStats, ThroughputStats]:
    """Batch-1 latency and throughput of ``model`` as ``protocol`` says, at one thread count.

    ``sample_shape`` is the per-sample shape ``(C, H, W)``. Both figures run on
    ``protocol.device`` with ``protocol.threads`` intra-op threads (restored afterwards).
    """
    shape = tuple(sample_shape)
    with _num_threads(protocol.threads):
        lat = measure_latency(
            model,
            (1, *shape),
            device=protocol.device,
            warmup=protocol.warmup,
            runs=protocol.runs,
            threads=protocol.threads,
        )
        thr = measure_throughput(
            model,
            shape,
            batch_size=protocol.batch_size,
            device=protocol.device,
            warmup=protocol.throughput_warmup,
            runs=protocol.throughput_runs,
        )
    return lat, thr
