"""The report of a Hydra multirun: one table over every job, a Pareto plot, failed jobs listed.

A sweep dir holds one sub-directory per job (``<sweep>/<job num>/``) with Hydra's
``.hydra/{config,overrides}.yaml``. A training job is complete when it wrote ``metrics.json``;
a ``fersuite-profile`` job (``task_name: profile``) when it wrote ``profile.json``. Any other
job dir is reported as *failed* (with the reason), never dropped.

Efficiency columns come from the job's ``profile.json`` when present (a controlled measurement
at a fixed thread count), else from the ``efficiency/*`` figures of its ``metrics.json``. Every
latency comes with the device and thread count it was measured at (``latency_device``,
``latency_threads``); ``report.md`` gives each (device, threads) setting its own latency column,
so a CPU and a GPU latency never share one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fersuite.profiling.macs import format_count
from fersuite.reporting.curves import Convergence, convergence, group_curves, save_curves_png
from fersuite.reporting.plots import ParetoPoint, save_pareto_png
from fersuite.reporting.seeds import (
    Group,
    PairedDifference,
    group_jobs,
    paired_differences,
    write_grouped_csv,
)
from fersuite.reporting.tables import markdown_table, write_csv
from fersuite.utils.io import atomic_write, atomic_write_json
from fersuite.utils.progress import track

log = logging.getLogger(__name__)

__all__ = [
    "ERROR_FILE",
    "PROFILE_COLUMNS",
    "REPORT_COLUMNS",
    "JobResult",
    "SweepReport",
    "collect_sweep",
    "job_dirs",
    "model_label",
    "write_sweep_report",
]

#: One line with the exception of a failed job, written by the sweep report Hydra callback.
ERROR_FILE = "error.txt"

#: Columns of ``report.csv`` (and, minus ``reason``, of ``report.md``).
REPORT_COLUMNS: tuple[str, ...] = (
    "job",
    "status",
    "model",
    "overrides",
    "acc",
    "f1_macro",
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
_SOURCES: dict[str, tuple[str | None, str | None]] = {
    "acc": ("test/acc", None),
    "f1_macro": ("test/f1_macro", None),
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
    #: Overrides shared by every job of the report (set by :func:`collect_sweep`); rows show
    #: only the others, the ones that tell the jobs apart.
    common: frozenset[str] = frozenset()

    @property
    def varying_overrides(self) -> list[str]:
        return [o for o in self.overrides if o not in self.common]

    def value(self, column: str) -> float | None:
        """The figure of a report column (profile.json first for efficiency columns)."""
        metric_key, profile_key = _SOURCES[column]
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
        return _setting_label(*self.latency_setting())

    def row(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "job": self.job,
            "status": self.status,
            "model": self.model,
            "overrides": " ".join(self.varying_overrides),
            "reason": self.reason,
        }
        for column in _SOURCES:
            out[column] = self.value(column)
        device, threads = (
            self.latency_setting() if out["latency_ms_b1"] is not None else (None, None)
        )
        out["latency_device"], out["latency_threads"] = device, threads
        return out


@dataclass
class SweepReport:
    """What :func:`write_sweep_report` found and wrote."""

    jobs: list[JobResult]
    paths: dict[str, Path]
    pareto_note: str = ""
    #: Configs run with several seeds (empty when every config ran once).
    groups: list[Group] = field(default_factory=list)
    #: The compared pairs of group specs (None: every group against the first).
    pairs: list[Any] | None = None
    #: Convergence figures of every trained config (:mod:`fersuite.reporting.curves`).
    convergence: list[Convergence] = field(default_factory=list)

    @property
    def paired(self) -> list[PairedDifference]:
        """The paired differences of ``pairs`` (or of every group against the first), per
        quality column, over their shared seeds; pairs whose groups are missing are left out."""
        return _paired(self.groups, self.pairs)[0]

    @property
    def failed(self) -> list[JobResult]:
        return [j for j in self.jobs if j.status != "ok"]


# --------------------------------------------------------------------------------------------
# reading a sweep
# --------------------------------------------------------------------------------------------


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


def _fmt_count(unit: str) -> Any:
    return lambda v: format_count(v, unit)


_MD_HEADERS = {
    "acc": "accuracy",
    "f1_macro": "macro-F1",
    "valence_ccc": "valence CCC",
    "arousal_ccc": "arousal CCC",
    "latency_ms_b1": "latency b1 (ms)",
    "throughput_ips": "throughput (img/s)",
    "macs": "MACs",
}

_MD_FORMATS: dict[str, Any] = {
    "acc": lambda v: f"{float(v):.4f}",
    "f1_macro": lambda v: f"{float(v):.4f}",
    "valence_ccc": lambda v: f"{float(v):.4f}",
    "arousal_ccc": lambda v: f"{float(v):.4f}",
    "params": _fmt_count(""),
    "macs": _fmt_count("Mac"),
    "latency_ms_b1": lambda v: f"{float(v):.2f}",
    "throughput_ips": lambda v: f"{float(v):,.1f}",
    "latency_ms_b1_median": lambda v: f"{float(v):.2f}",
    "latency_ms_b1_p90": lambda v: f"{float(v):.2f}",
    "peak_memory_mb": lambda v: f"{float(v):,.1f}",
}


def _pareto_groups(groups: Sequence[Group], metric: str, path: Path) -> tuple[Path | None, str]:
    """One point per group: mean MACs, mean ``metric`` with its 95% interval as error bar."""
    points = []
    for g in groups:
        macs, quality = g.stat("macs"), g.metric(metric)
        if quality.n and math.isfinite(quality.mean) and macs.n and macs.mean > 0:
            points.append(ParetoPoint(macs.mean, quality.mean, f"{g.name} (n={quality.n})",
                                      quality.ci95))  # fmt: skip
    if not points:
        return None, f"No Pareto plot: no finished job has both `{metric}` and a MAC count."
    save_pareto_png(
        points,
        path,
        x_label="MACs per image",
        y_label=f"{metric} (mean over seeds, 95% CI)",
        title=f"{metric} vs. MACs ({len(points)} configs, seeds aggregated)",
    )
    return path, ""


def _pareto(
    jobs: Sequence[JobResult], metric: str, path: Path, names: Mapping[int, str] | None = None
) -> tuple[Path | None, str]:
    """One point per finished job, labelled by ``names`` (``id(job)`` -> its group's name, the
    label the learning curves use) or else by its model."""
    names = names or {}
    usable: list[tuple[JobResult, float, float]] = []
    for j in jobs:
        macs = j.value("macs")
        quality = j.metrics.get(metric)
        if j.status != "ok" or quality is None or macs is None:
            continue
        if macs > 0 and math.isfinite(quality):
            usable.append((j, macs, quality))
    if not usable:
        return None, f"No Pareto plot: no finished job has both `{metric}` and a MAC count."
    labels = [names.get(id(j), j.model) for j, _, _ in usable]
    points = [
        ParetoPoint(macs, quality, f"{label} ({j.job})" if labels.count(label) > 1 else label)
        for (j, macs, quality), label in zip(usable, labels, strict=True)
    ]
    save_pareto_png(
        points,
        path,
        x_label="MACs per image",
        y_label=metric,
        title=f"{metric} vs. MACs ({len(points)} runs)",
    )
    return path, ""


def _setting_label(device: str | None, threads: int | None) -> str:
    if device is None and threads is None:
        return "device not recorded"
    where = device or "device not recorded"
    if threads is None:
        return where
    return f"{where}, {threads} thread{'' if threads == 1 else 's'}"


def _latency_columns(
    rows: list[dict[str, Any]], columns: list[str]
) -> tuple[list[str], dict[str, str], str]:
    """Split ``latency_ms_b1`` into one column per (device, threads) setting of ``rows``.

    Returns the new columns, their headers and a warning when settings differ (rows are
    changed in place: each latency moves to its setting's column).
    """
    settings: list[str] = []
    for r in rows:
        if r.get("latency_ms_b1") is None:
            continue
        label = _setting_label(r.get("latency_device"), r.get("latency_threads"))
        r["_latency_setting"] = label
        if label not in settings:
            settings.append(label)
    columns = [c for c in columns if c not in ("latency_device", "latency_threads")]
    if len(settings) <= 1:
        header = "latency b1 (ms)"
        if settings and settings[0] != "device not recorded":
            header = f"latency b1 (ms, {settings[0]})"
        return columns, {"latency_ms_b1": header}, ""
    split = [f"latency_ms_b1@{label}" for label in settings]
    for r in rows:
        if "_latency_setting" in r:
            r[f"latency_ms_b1@{r['_latency_setting']}"] = r["latency_ms_b1"]
    at = columns.index("latency_ms_b1")
    columns = [*columns[:at], *split, *columns[at + 1 :]]
    headers = {f"latency_ms_b1@{label}": f"latency b1 (ms, {label})" for label in settings}
    warning = (
        "\n**Latencies were measured on different devices / thread counts** ("
        + "; ".join(settings)
        + "): they are not comparable across these columns.\n"
    )
    return columns, headers, warning


_GROUP_MD = ("acc", "f1_macro", "valence_ccc", "arousal_ccc", "params", "macs", "latency_ms_b1")


def _paired(
    groups: Sequence[Group], pairs: Sequence[Any] | None
) -> tuple[list[PairedDifference], list[str]]:
    """Paired differences of ``pairs`` (None: against the first group) and one line per pair
    that cannot be compared (yet: after each job of a sweep, later groups are missing)."""
    if not groups:
        return [], []
    if pairs is None:
        return paired_differences(groups), []
    out: list[PairedDifference] = []
    missing: list[str] = []
    for pair in pairs:
        try:
            out += paired_differences(groups, [pair])
        except ValueError as exc:
            missing.append(str(exc))
    return out, missing


def _per_seed(values: Sequence[int]) -> str:
    """``20`` when every seed agrees, else each seed's value: ``17, 18, 19``."""
    return str(values[0]) if len(set(values)) == 1 else ", ".join(map(str, values))


def _convergence_markdown(rows: Sequence[Convergence], key: str, window: int) -> str:
    table = [
        {
            "group": c.group,
            "n": c.n,
            "epochs": _per_seed(c.epochs),
            "best_epoch": _per_seed(c.best_epochs),
            "best": f"{c.best:.4f}",
            "late_gain": (
                f"{c.late_gain:+.4f}"
                + ("" if math.isnan(c.late_gain_ci95) else f" ± {c.late_gain_ci95:.4f}")
            )
            if math.isfinite(c.late_gain)
            else None,
        }
        for c in rows
    ]
    headers = {
        "group": "config",
        "n": "seeds",
        "epochs": "epochs run",
        "best_epoch": "best epoch (from 0)",
        "best": f"best {key}",
        "late_gain": f"gain in the last {window} epochs",
    }
    return (
        f"\n## Convergence ({key})\n\n"
        "Epochs run and best epochs per seed; epochs are numbered from 0, as in the "
        "checkpoint names (`best-epoch005.ckpt` is epoch 5). "
        f"Means over seeds. *gain in the last {window} epochs*: best {key} of the last "
        f"{window} epochs minus the best before them (± 95% half-width over seeds); near zero "
        "or negative means the curve had flattened. Curves: `learning_curves.png`.\n\n"
        + markdown_table(table, list(headers), headers, {})
    )


def _grouped_markdown(groups: Sequence[Group], pairs: Sequence[Any] | None = None) -> str:
    """The grouped table (mean ± 95% half-width) and the paired comparisons (of ``pairs``, or
    against the first group), over the seeds each pair shares."""
    rows = []
    for g in groups:
        row: dict[str, Any] = {"group": g.name, "n": len(g.jobs)}
        for c in _GROUP_MD:
            st = g.stat(c)
            if not st.n:
                row[c] = None
            elif c in ("params", "macs"):
                row[c] = _MD_FORMATS[c](st.mean)
            elif st.n < 2:
                row[c] = f"{st.mean:.4f}"
            else:
                row[c] = f"{st.mean:.4f} ± {st.ci95:.4f}"
        rows.append(row)
    headers = {**_MD_HEADERS, "group": "config (overrides without seed)", "n": "seeds"}
    parts = [
        "\n## Seeds aggregated\n\n",
        "Mean ± half-width of the Student-t 95% interval (n − 1 degrees of freedom); "
        "`report_grouped.csv` has the means, sample standard deviations and intervals.\n\n",
        markdown_table(rows, ["group", "n", *_GROUP_MD], headers, {}),
    ]
    paired, missing = _paired(groups, pairs)
    if paired or missing:
        what = "of the chosen pairs" if pairs is not None else f"against `{groups[0].name}`"
        parts.append(f"\n### Paired differences {what}\n\n")
        parts += [f"- {d}\n" for d in paired]
        parts += [f"- not compared: {m}\n" for m in missing]
    return "".join(parts)


def _markdown(
    title: str,
    jobs: Sequence[JobResult],
    pareto: Path | None,
    note: str,
    metric: str,
    groups: Sequence[Group] = (),
    pairs: Sequence[Any] | None = None,
    curves: str = "",
) -> str:
    ok = [j for j in jobs if j.status == "ok"]
    failed = [j for j in jobs if j.status != "ok"]
    columns = [c for c in REPORT_COLUMNS if c not in ("status", "reason")]
    has_quality = any(j.kind == "train" for j in ok)
    if not has_quality:  # a profile sweep: no accuracy columns
        columns = [c for c in columns if c not in ("acc", "f1_macro", "valence_ccc", "arousal_ccc")]
    rows = [j.row() for j in ok]
    columns, latency_headers, latency_warning = _latency_columns(rows, columns)
    formats = {**_MD_FORMATS, **{c: _MD_FORMATS["latency_ms_b1"] for c in latency_headers}}
    common = [o for o in jobs[0].overrides if o in jobs[0].common] if jobs else []
    parts = [
        f"# {title}\n",
        f"{len(ok)} of {len(jobs)} jobs finished, {len(failed)} failed.\n",
        f"\nOverrides shared by every job: `{' '.join(common)}`\n\n" if common else "\n",
        markdown_table(rows, columns, {**_MD_HEADERS, **latency_headers}, formats),
        latency_warning,
    ]
    if groups:
        parts.append(_grouped_markdown(groups, pairs))
    parts.append(curves)
    if failed:
        parts.append("\n## Failed jobs\n")
        parts += [
            f"- job `{j.job}` ({j.model}; `{' '.join(j.varying_overrides)}`): {j.reason}\n"
            for j in failed
        ]
    if pareto is not None:
        parts.append(f"\n## Pareto front ({metric} vs. MACs)\n\n![Pareto plot]({pareto.name})\n")
    elif note and has_quality:
        parts.append(f"\n{note}\n")
    return "".join(parts)


def write_sweep_report(
    sweep_dirs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    metric: str = "test/acc",
    pairs: Sequence[Any] | None = None,
    curve_window: int = 3,
) -> SweepReport:
    """Gather a multirun (or several) and write the report files into ``out_dir``.

    Writes ``report.csv``, ``report.md``, ``pareto.png`` (``metric`` vs. MACs, when at least
    one finished job has both), ``report_grouped.csv`` (training jobs grouped by their
    overrides without ``seed``: :mod:`fersuite.reporting.seeds`; with several seeds per config
    the Pareto plot shows the groups' means with 95% error bars and ``report.md`` a grouped
    table and paired differences) and, when jobs wrote ``profile.json``, the merged
    ``profile.json`` / ``profile.csv`` (one record per model). ``out_dir`` defaults to the
    (first) sweep dir.

    ``pairs``: the groups to compare, each ``[A, B]`` or ``"A vs B"`` with A and B overrides
    that pick one group (:func:`fersuite.reporting.seeds.select_group`); None compares every
    group with the first. Training jobs also get ``learning_curves.png`` (the validation
    counterpart of ``metric`` per epoch, mean over seeds) and a convergence table
    (:mod:`fersuite.reporting.curves`, ``curve_window`` epochs).
    """
    dirs = [sweep_dirs] if isinstance(sweep_dirs, str | os.PathLike) else list(sweep_dirs)
    if not dirs:
        raise ValueError("no sweep dir given")
    jobs = collect_sweep(dirs)
    out = Path(out_dir) if out_dir is not None else Path(dirs[0])
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}

    write_csv(out / "report.csv", [j.row() for j in jobs], REPORT_COLUMNS)
    paths["csv"] = out / "report.csv"

    trained = [j for j in jobs if j.kind == "train"]
    groups = group_jobs(trained)
    if groups:
        paths["grouped"] = write_grouped_csv(out / "report_grouped.csv", groups, tuple(_SOURCES))
    seeded = list(groups) if any(len(g.jobs) > 1 for g in groups) else []
    if seeded:
        pareto, note = _pareto_groups(seeded, metric, out / "pareto.png")
    else:
        names = {id(j): g.name for g in groups for j in g.jobs}  # as the learning curves say
        pareto, note = _pareto(jobs, metric, out / "pareto.png", names)
    if pareto is not None:
        paths["pareto"] = pareto

    curve_key = "val/" + metric.split("/", 1)[1] if metric.startswith("test/") else metric
    curves = [group_curves(g, curve_key) for g in groups]  # each job's CSV read once
    found = (
        convergence(g, curve_key, curve_window, cs) for g, cs in zip(groups, curves, strict=True)
    )
    conv = [c for c in found if c]
    curves_md = ""
    if conv:
        png = save_curves_png(groups, curve_key, out / "learning_curves.png", curves)
        if png is not None:
            paths["curves"] = png
        curves_md = _convergence_markdown(conv, curve_key, curve_window)

    records = [{**r, "job": j.job} for j in jobs for r in j.profile]
    if records:
        atomic_write_json(out / "profile.json", records)
        write_csv(out / "profile.csv", records, PROFILE_COLUMNS)
        paths["profile_json"] = out / "profile.json"
        paths["profile_csv"] = out / "profile.csv"

    title = "Sweep report: " + ", ".join(str(Path(d)) for d in dirs)
    text = _markdown(title, jobs, pareto, note, metric, seeded, pairs, curves_md)
    atomic_write(out / "report.md", lambda fh: fh.write(text))
    paths["md"] = out / "report.md"
    return SweepReport(
        jobs=jobs,
        paths=paths,
        pareto_note=note,
        groups=seeded,
        pairs=list(pairs) if pairs is not None else None,
        convergence=conv,
    )
