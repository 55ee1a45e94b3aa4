"""Efficiency records of zoo models at their configured input, no training: the library of
``fersuite-profile`` (:mod:`fersuite.cli.profile`).

:func:`profile_model` measures one network with the one implementation in
:mod:`fersuite.profiling` that training runs use too:

* parameters (total, trainable) and MACs from fvcore with fersuite's extra handles (attention,
  broadcasting matmuls); ``skipped_ops`` lists the operators still not counted;
* activations (output elements of conv / linear / matmul);
* CPU latency at batch 1 (median, p90 over ``profile.latency_runs`` after warm-up) with the
  intra-op thread count fixed to ``profile.threads``, throughput (images/s) at
  ``profile.batch_size`` and the peak memory of that batch;
* the same on CUDA when present (``profile.device=auto``) or only there (``cuda``), timed with
  device synchronisation.

:func:`write_profile` writes ``profile.json`` (a list with one record per model) and
``profile.csv``; :func:`print_profile` prints the table.
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.table import Table
from torch import nn

from fersuite.config import settings_keys, validate_config
from fersuite.errors import ConfigError
from fersuite.profiling import (
    LATENCY_PROTOCOL,
    LatencyProtocol,
    count_macs,
    count_params,
    format_macs,
    measure_speed,
)
from fersuite.profiling.macs import model_input_shape
from fersuite.reporting.jobs import PROFILE_COLUMNS, model_label
from fersuite.reporting.tables import write_csv
from fersuite.utils.console import make_console
from fersuite.utils.io import atomic_write_json

log = logging.getLogger("fersuite.profile")

__all__ = [
    "ProfileSettings",
    "print_profile",
    "profile_config",
    "profile_model",
    "write_profile",
]

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class ProfileSettings:
    """The ``profile.*`` keys, validated."""

    name: str | None = None
    num_classes: int = 8
    device: str = "auto"
    threads: int = LATENCY_PROTOCOL.threads
    latency_runs: int = LATENCY_PROTOCOL.runs
    latency_warmup: int = LATENCY_PROTOCOL.warmup
    batch_size: int = LATENCY_PROTOCOL.batch_size
    throughput_runs: int = LATENCY_PROTOCOL.throughput_runs
    throughput_warmup: int = LATENCY_PROTOCOL.throughput_warmup
    activations: bool = True

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ConfigError(f"profile.device={self.device!r}; expected one of {DEVICES}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("profile.device=cuda but no CUDA device is available")
        for key, lo in (
            ("num_classes", 1),
            ("threads", 1),
            ("latency_runs", 1),
            ("latency_warmup", 0),
            ("batch_size", 1),
            ("throughput_runs", 1),
            ("throughput_warmup", 0),
        ):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise ConfigError(f"profile.{key}={value!r}; expected an integer >= {lo}")

    @classmethod
    def from_config(cls, cfg: DictConfig | dict[str, Any] | None) -> ProfileSettings:
        raw = settings_keys(cfg, cls.__dataclass_fields__, "profile")
        return cls(**raw)

    def devices(self) -> list[str]:
        """Where to time; the first is the record's main figure (``auto``: the CPU)."""
        if self.device == "auto":
            primary = LATENCY_PROTOCOL.device
            return [primary, "cuda"] if torch.cuda.is_available() else [primary]
        return [self.device]


def _timings(
    net: nn.Module, shape: tuple[int, int, int], device: str, s: ProfileSettings
) -> dict[str, Any]:
    protocol = LatencyProtocol(
        device=device,
        threads=s.threads,
        warmup=s.latency_warmup,
        runs=s.latency_runs,
        batch_size=s.batch_size,
        throughput_warmup=s.throughput_warmup,
        throughput_runs=s.throughput_runs,
    )
    lat, thr = measure_speed(net, shape, protocol)
    return {
        "latency_ms_b1_median": lat.median_ms,
        "latency_ms_b1_p90": lat.p90_ms,
        "latency_ms_b1_mean": lat.mean_ms,
        "latency_runs": lat.runs,
        "throughput_ips": thr.images_per_s,
        "throughput_batch": thr.batch_size,
        "peak_memory_mb": thr.peak_memory_mb,
        "memory_source": thr.memory_source,
        "threads": lat.threads,
        "device": lat.device,
    }


def profile_model(
    net: nn.Module, name: str, settings: ProfileSettings, arch: str | None = None
) -> dict[str, Any]:
    """Profile ``net`` at its ``input_spec`` shape; returns one ``profile.json`` record.

    Record keys: ``name``, ``arch``, ``input_shape`` ([C, H, W]), ``num_classes``, ``params``,
    ``params_trainable``, ``macs`` (batch 1), ``macs_by_operator``, ``activations``,
    ``skipped_ops`` (op -> occurrences not counted), ``latency_ms_b1_median`` / ``_p90`` /
    ``_mean``, ``latency_runs``, ``throughput_ips``, ``throughput_batch``, ``peak_memory_mb``,
    ``memory_source``, ``threads``, ``device``, environment keys, and with ``device=auto`` on a
    CUDA machine the CUDA figures as ``cuda_<key>``.
    """
    shape = model_input_shape(net)
    net = net.to("cpu").eval()
    params = count_params(net)
    macs = count_macs(net, input_shape=(1, *shape), activations=settings.activations)
    record: dict[str, Any] = {
        "name": name,
        "arch": arch or type(net).__name__,
        "input_shape": list(shape),
        "num_classes": int(getattr(net, "num_classes", settings.num_classes)),
        "params": params.total,
        "params_trainable": params.trainable,
        "macs": macs.total,
        "macs_by_operator": macs.by_operator,
        "activations": macs.activations,
        "skipped_ops": macs.skipped_ops,
    }
    devices = settings.devices()
    primary = _timings(net, shape, devices[0], settings)
    record.update(primary)
    for extra in devices[1:]:
        figures = _timings(net, shape, extra, settings)
        for key in ("latency_ms_b1_median", "latency_ms_b1_p90", "throughput_ips"):
            record[f"cuda_{key}"] = figures[key]
        record["cuda_peak_memory_mb"] = figures["peak_memory_mb"]
        record["cuda_device"] = figures["device"]
    if any(d.startswith("cuda") for d in devices):
        record["cuda_device_name"] = torch.cuda.get_device_name()
    record.update(
        {
            "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
        }
    )
    return record


def profile_config(cfg: DictConfig) -> list[dict[str, Any]]:
    """Build ``cfg.model`` (with ``profile.num_classes``) and profile it."""
    validate_config(cfg)
    settings = ProfileSettings.from_config(cfg.get("profile"))
    if cfg.get("model") is None or "_target_" not in cfg.model:
        raise ConfigError("no model to profile: pass model=<timm|mit_fer|lightweight_cnn|emonet>")
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    assert isinstance(model_cfg, dict)
    net = instantiate(cfg.model, num_classes=settings.num_classes)
    name = settings.name or model_label(model_cfg)  # type: ignore[arg-type]
    log.info("profiling %s", name)
    record = profile_model(net, name, settings, arch=str(model_cfg.get("arch", "")))
    record["model_cfg"] = model_cfg
    return [record]


def write_profile(out_dir: str | os.PathLike[str], records: Sequence[dict[str, Any]]) -> None:
    """``profile.json`` (list of records) and ``profile.csv`` in ``out_dir``, atomically."""
    out = Path(out_dir)
    atomic_write_json(out / "profile.json", list(records))
    write_csv(out / "profile.csv", records, [c for c in PROFILE_COLUMNS if c != "job"])


def print_profile(records: Sequence[dict[str, Any]], console: Any = None) -> None:
    """A rich table of profile records; the operators fvcore did not count are listed below."""

    console = console or make_console()
    table = Table(title="fersuite profile")
    table.add_column("model")
    for col in ("input", "params", "MACs", "b1 median", "b1 p90", "img/s", "peak MiB", "thr"):
        table.add_column(col, justify="right")
    table.add_column("device")
    rows: list[tuple[str, ...]] = []
    for r in records:
        rows.append(
            (
                r["name"],
                "x".join(str(v) for v in r["input_shape"]),
                f"{r['params'] / 1e6:.3f} M",
                format_macs(r["macs"]),
                f"{r['latency_ms_b1_median']:.2f} ms",
                f"{r['latency_ms_b1_p90']:.2f} ms",
                f"{r['throughput_ips']:,.1f}",
                f"{r['peak_memory_mb']:,.1f}",
                str(r["threads"]),
                r["device"],
            )
        )
        if "cuda_latency_ms_b1_median" in r:
            rows.append(
                (
                    "",
                    "",
                    "",
                    "",
                    f"{r['cuda_latency_ms_b1_median']:.2f} ms",
                    f"{r['cuda_latency_ms_b1_p90']:.2f} ms",
                    f"{r['cuda_throughput_ips']:,.1f}",
                    f"{r['cuda_peak_memory_mb']:,.1f}",
                    "",
                    r["cuda_device"],
                )
            )
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for r in records:
        skipped = ", ".join(
            f"{op.removeprefix('aten::')} x{n}" for op, n in r["skipped_ops"].items()
        )
        console.print(f"{r['name']}: not counted as MACs: {skipped or 'nothing'}")
