"""What is saved beside every run: final metrics, environment and a summary table."""

from __future__ import annotations

import math
import platform
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fersuite.utils.console import make_console
from fersuite.utils.io import atomic_write_json

PACKAGES = (
    "fersuite",
    "torch",
    "torchvision",
    "lightning",
    "hydra-core",
    "omegaconf",
    "timm",
    "torchmetrics",
    "wandb",
    "fvcore",
    "numpy",
)


def scalar_metrics(values: Mapping[str, Any]) -> dict[str, float]:
    """Finite scalar figures only (tensors converted), keyed by their logged names."""
    out: dict[str, float] = {}
    for key, value in values.items():
        v = (
            value.item()
            if hasattr(value, "item") and getattr(value, "numel", lambda: 1)() == 1
            else value
        )
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        if math.isfinite(float(v)):
            out[key] = float(v)
    return dict(sorted(out.items()))


#: Text figures kept in ``metrics.json`` beside the numbers (where a figure was measured).
TEXT_METRICS = ("efficiency/latency_device",)


def write_metrics(path: Path, values: Mapping[str, Any]) -> dict[str, Any]:
    """Finite scalars plus the :data:`TEXT_METRICS` labels, written as ``metrics.json``."""
    metrics: dict[str, Any] = dict(scalar_metrics(values))
    metrics.update({k: values[k] for k in TEXT_METRICS if isinstance(values.get(k), str)})
    metrics = dict(sorted(metrics.items()))
    atomic_write_json(path, metrics)
    return metrics


def git_commit(cwd: Path | None = None) -> str | None:
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd or Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() or None


def environment() -> dict[str, Any]:
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "git_commit": git_commit(),
        "argv": sys.argv,
    }


def print_summary(
    metrics: Mapping[str, float | str], paths: Mapping[str, str], console: Console | None = None
) -> None:
    """One table: test metrics, efficiency figures and where the artefacts are."""
    console = console or make_console()
    table = Table(title="fersuite run summary", show_lines=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        if key.startswith(("test/", "efficiency/")) or key.endswith("_best"):
            table.add_row(key, _fmt(key, value))
    for key, value in paths.items():
        table.add_row(key, str(value))
    console.print(table)


def _fmt(key: str, value: float | str) -> str:
    if isinstance(value, str):
        return value
    if key == "efficiency/latency_threads":
        return f"{value:.0f}"
    if key == "efficiency/macs":
        return f"{value / 1e6:,.2f} MMac"
    if key in ("efficiency/params", "efficiency/params_trainable"):
        return f"{value / 1e6:,.3f} M"
    if "latency" in key:
        return f"{value:.2f} ms"
    if key.endswith("_ips"):
        return f"{value:,.1f} img/s"
    return f"{value:.4f}"
