"""The jobs of a Hydra multirun, read from its sweep dir(s) into :class:`JobResult` rows: what
:mod:`fersuite.reporting.sweep` reports and :func:`fersuite.apps.run_app` counts.

A sweep dir holds one sub-directory per job (``<sweep>/<job num>/``) with Hydra's
``.hydra/{config,overrides}.yaml``. A training job is complete when it wrote ``metrics.json``;
a ``fersuite-profile`` job (``task_name: profile``) when it wrote ``profile.json``. Any other
job dir is *failed* (with the reason), never dropped.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fersuite.utils.progress import track

log = logging.getLogger(__name__)

__all__ = [
    "CUT_SHORT",
    "ERROR_FILE",
    "PROFILE_COLUMNS",
    "REPORT_COLUMNS",
    "SOURCES",
    "JobResult",
    "collect_sweep",
    "job_dirs",
    "model_label",
    "setting_label",
]

#: One line with the exception of a failed job, written by the sweep report Hydra callback.
ERROR_FILE = "error.txt"
#: How ``error.txt`` starts for a trial whose sweeper died under it (:mod:`fersuite.search`):
#: the resumed search re-tries it, so it is reported but not counted as a failure of the run.
CUT_SHORT = "SweeperDied"

#: Columns of ``report.csv`` (and, minus ``reason``, of ``report.md``).
REPORT_COLUMNS: tuple[str, ...] = (
    "job",
    "status",
    "model",
    "overrides",
    "acc",
    "f1_macro",
    "balanced_acc",
    "valence_ccc",
    "arousal_ccc",
    "params",
    "macs",
    "latency_ms_b1",
    "latency_device",
    "latency_threads",
    "throughput_ips",
    "reason",
)

#: Columns of a merged ``profile.csv`` (the per-job files have the same columns).
PROFILE_COLUMNS: tuple[str, ...] = (
    "name",
    "arch",
    "input_shape",
    "num_classes",
    "params",
    "params_trainable",
    "macs",
    "activations",
    "latency_ms_b1_median",
    "latency_ms_b1_p90",
    "latency_runs",
    "throughput_ips",
    "throughput_batch",
    "peak_memory_mb",
    "memory_source",
    "threads",
    "device",
    "cuda_latency_ms_b1_median",
    "cuda_latency_ms_b1_p90",
    "cuda_throughput_ips",
    "cuda_peak_memory_mb",
    "skipped_ops",
    "job",
)

#: report column -> (metrics.json key, profile.json key)
SOURCES: dict[str, tuple[str | None, str | None]] = {
    "acc": ("test/acc", None),
    "f1_macro": ("test/f1_macro", None),
    "balanced_acc": ("test/balanced_acc", None),
    "valence_ccc": ("test/valence_ccc", None),
    "arousal_ccc": ("test/arousal_ccc", None),
    "params": ("efficiency/params", "params"),
    "macs": ("efficiency/macs", "macs"),
    "latency_ms_b1": ("efficiency/latency_ms_b1", "latency_ms_b1_median"),
    "throughput_ips": ("efficiency/throughput_ips", "throughput_ips"),
}


@dataclass
class JobResult:
    """One job of a sweep, complete or failed."""

    job: str
    path: Path
    status: str  # "ok" | "failed"
    kind: str  # "train" | "profile"
    overrides: list[str] = field(default_factory=list)
    model: str = "?"
    metrics: dict[str, float] = field(default_factory=dict)
    #: Text entries of ``metrics.json`` (e.g. ``efficiency/latency_device``).
    text: dict[str, str] = field(default_factory=dict)
    profile: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""
    #: A trial whose sweeper died under it (its ``error.txt`` starts with :data:`CUT_SHORT`).
    cut_short: bool = False
    #: Overrides shared by every job of the report (set by :func:`collect_sweep`); rows show
    #: only the others, the ones that tell the jobs apart.
    common: frozenset[str] = frozenset()

    @property
    def varying_overrides(self) -> list[str]:
        return [o for o in self.overrides if o not in self.common]

    def value(self, column: str) -> float | None:
        """The figure of a report column (profile.json first for efficiency columns)."""
        metric_key, profile_key = SOURCES[column]
        if profile_key and self.profile and profile_key in self.profile[0]:
            v = self.profile[0][profile_key]
            return float(v) if isinstance(v, int | float) else None
        if metric_key and metric_key in self.metrics:
            return float(self.metrics[metric_key])
        return None

    def latency_setting(self) -> tuple[str | None, int | None]:
        """(device, threads) of the job's latency figure, from the same file as the figure."""
        record = self.profile[0] if self.profile else {}
        if "latency_ms_b1_median" in record:
            device, threads = record.get("device"), record.get("threads")
        else:
            device = self.text.get("efficiency/latency_device")
            threads = self.metrics.get("efficiency/latency_threads")
        return (
            str(device) if device is not None else None,
            int(threads) if isinstance(threads, int | float) else None,
        )

    def latency_label(self) -> str:
        """``"cpu, 1 thread"``: where the latency figure was measured."""
        return setting_label(*self.latency_setting())

    def row(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "job": self.job,
            "status": self.status,
            "model": self.model,
            "overrides": " ".join(self.varying_overrides),
            "reason": self.reason,
        }
        for column in SOURCES:
            out[column] = self.value(column)
        device, threads = (
            self.latency_setting() if out["latency_ms_b1"] is not None else (None, None)
        )
        out["latency_device"], out["latency_threads"] = device, threads
        return out


def _natural_key(name: str) -> tuple[Any, ...]:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def job_dirs(sweep_dir: str | os.PathLike[str]) -> list[Path]:
    """Job sub-directories of a multirun dir (those with ``.hydra/`` or a numeric name)."""
    root = Path(sweep_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"sweep dir not found: {root} (expected a Hydra multirun dir)")
    dirs = [
        p for p in root.iterdir() if p.is_dir() and ((p / ".hydra").is_dir() or p.name.isdigit())
    ]
    return sorted(dirs, key=lambda p: _natural_key(p.name))


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        log.warning("could not read %s: %s", path, exc)
        return None


def model_label(model_cfg: Mapping[str, Any] | None) -> str:
    """Short model name from a model config: the timm name, ``mit_fer-b0``, or the arch."""
    if not model_cfg:
        return "?"
    arch = str(model_cfg.get("arch", "?"))
    if arch == "timm" and model_cfg.get("name"):
        return str(model_cfg["name"])
    if model_cfg.get("variant"):
        return f"{arch}-{model_cfg['variant']}"
    return arch


def _label_from_overrides(overrides: Sequence[str]) -> str | None:
    found: dict[str, str] = {}
    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        found[key] = value
    return found.get("model.name") or found.get("model") or None


def _log_hint(job: Path) -> str:
    """The job's recorded exception, else the last line of its log mentioning an error."""
    error = job / ERROR_FILE
    if error.is_file():
        try:
            return error.read_text(errors="replace").strip().splitlines()[0][:300]
        except (OSError, IndexError):
            pass
    for log_file in sorted(job.glob("*.log")):
        try:
            lines = log_file.read_text(errors="replace").splitlines()
        except OSError:
            continue
        hits = [ln.strip() for ln in lines if re.search(r"error|exception|traceback", ln, re.I)]
        if hits:
            return hits[-1][:200]
    return ""


def _read_json(path: Path) -> tuple[Any, str]:
    try:
        return json.loads(path.read_text()), ""
    except (OSError, ValueError) as exc:
        return None, f"{path.name} unreadable ({str(exc).splitlines()[0][:120]})"


def _read_job(job: Path, name: str) -> JobResult:
    overrides = _load_yaml(job / ".hydra" / "overrides.yaml") or []
    overrides = [str(o) for o in overrides] if isinstance(overrides, list) else []
    cfg = _load_yaml(job / ".hydra" / "config.yaml")
    cfg = cfg if isinstance(cfg, dict) else {}
    kind = "profile" if cfg.get("task_name") == "profile" else "train"
    result = JobResult(job=name, path=job, status="failed", kind=kind, overrides=overrides)
    model_cfg = cfg.get("model") if isinstance(cfg.get("model"), dict) else None
    result.model = (
        model_label(model_cfg) if model_cfg else (_label_from_overrides(overrides) or "?")
    )

    problems: list[str] = []
    metrics_path = job / "metrics.json"
    if metrics_path.is_file():
        data, err = _read_json(metrics_path)
        if isinstance(data, dict):
            result.metrics = {
                k: float(v)
                for k, v in data.items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            }
            result.text = {k: v for k, v in data.items() if isinstance(v, str)}
        else:
            problems.append(err or "metrics.json is not a JSON object")
    elif kind == "train":
        problems.append("no metrics.json (the job did not finish)")

    profile_path = job / "profile.json"
    if profile_path.is_file():
        data, err = _read_json(profile_path)
        records = data if isinstance(data, list) else [data] if isinstance(data, dict) else None
        if records and all(isinstance(r, dict) for r in records):
            result.profile = [dict(r) for r in records]
            if kind == "profile" and records[0].get("name"):
                result.model = str(records[0]["name"])
        else:
            problems.append(err or "profile.json holds no profile record")
    elif kind == "profile":
        problems.append("no profile.json (the job did not finish)")

    if problems:
        hint = _log_hint(job)
        result.reason = "; ".join(problems) + (f": {hint}" if hint else "")
        result.cut_short = hint.startswith(CUT_SHORT)
    else:
        result.status = "ok"
    return result


def collect_sweep(sweep_dirs: Iterable[str | os.PathLike[str]]) -> list[JobResult]:
    """Every job of one or more multirun dirs (job ids prefixed by the sweep name if > 1)."""
    dirs = [Path(d) for d in sweep_dirs]
    jobs: list[JobResult] = []
    for sweep in dirs:
        found = job_dirs(sweep)
        if not found:
            raise FileNotFoundError(
                f"{sweep} has no job directories (expected <sweep>/<job num>/.hydra/); "
                "is it a Hydra multirun dir?"
            )
        for job in track(found, f"reading {sweep.name}"):
            name = f"{sweep.name}/{job.name}" if len(dirs) > 1 else job.name
            jobs.append(_read_job(job, name))
    if len(jobs) > 1:
        common = frozenset.intersection(*(frozenset(j.overrides) for j in jobs))
        for j in jobs:
            j.common = common
    return jobs


# --------------------------------------------------------------------------------------------
# writing the report
# --------------------------------------------------------------------------------------------


def setting_label(device: str | None, threads: int | None) -> str:
    if device is None and threads is None:
        return "device not recorded"
    where = device or "device not recorded"
    if threads is None:
        return where
    return f"{where}, {threads} thread{'' if threads == 1 else 's'}"
