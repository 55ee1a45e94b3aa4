"""The report of a Hydra multirun: one table over every job, a Pareto plot, failed jobs listed
(the jobs are read by :mod:`fersuite.reporting.jobs`).

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

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fersuite.config import equivalence_margins
from fersuite.profiling.macs import format_count
from fersuite.reporting.compare import (
    Comparisons,
    compare_groups,
    comparisons_markdown,
    recorded_margins,
    write_comparisons_csv,
)
from fersuite.reporting.cross_dataset import gather_cross_dataset
from fersuite.reporting.curves import Convergence, convergence, group_curves, save_curves_png
from fersuite.reporting.jobs import (
    PROFILE_COLUMNS,
    REPORT_COLUMNS,
    SOURCES,
    JobResult,
    collect_sweep,
    setting_label,
)
from fersuite.reporting.plots import ParetoPoint, save_pareto_png
from fersuite.reporting.seeds import (
    PAIRED_COLUMNS,
    Group,
    PairedDifference,
    group_jobs,
    paired_differences,
    seed_of,
    write_grouped_csv,
)
from fersuite.reporting.tables import markdown_table, write_csv
from fersuite.utils.io import atomic_write, atomic_write_json

log = logging.getLogger(__name__)

__all__ = ["SweepReport", "write_sweep_report"]


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
    #: The tested comparisons of ``report_comparisons.csv`` (:mod:`fersuite.reporting.compare`).
    comparisons: Comparisons = field(default_factory=Comparisons)
    #: One line per job ``cross_dataset.csv`` that was refused (not gathered).
    cross_refused: list[str] = field(default_factory=list)

    @property
    def paired(self) -> list[PairedDifference]:
        """The paired differences of ``pairs`` (or of every group against the first), per
        quality column, over their shared seeds; pairs whose groups are missing are left out."""
        return _paired(self.groups, self.pairs)[0]

    @property
    def failed(self) -> list[JobResult]:
        return [j for j in self.jobs if j.status != "ok"]


def _fmt_count(unit: str) -> Any:
    return lambda v: format_count(v, unit)


_MD_HEADERS = {
    "acc": "accuracy",
    "f1_macro": "macro-F1",
    "balanced_acc": "balanced acc.",
    "valence_ccc": "valence CCC",
    "arousal_ccc": "arousal CCC",
    "latency_ms_b1": "latency b1 (ms)",
    "throughput_ips": "throughput (img/s)",
    "macs": "MACs",
}

_MD_FORMATS: dict[str, Any] = {
    "acc": lambda v: f"{float(v):.4f}",
    "f1_macro": lambda v: f"{float(v):.4f}",
    "balanced_acc": lambda v: f"{float(v):.4f}",
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
        label = setting_label(r.get("latency_device"), r.get("latency_threads"))
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


_GROUP_MD = (*PAIRED_COLUMNS, "params", "macs", "latency_ms_b1")


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
        parts.append(
            f"\n### Paired differences {what}\n\n"
            "Uncorrected 95% intervals, one comparison at a time; the verdicts are those of the "
            "Comparisons table (Holm-corrected).\n\n"
        )
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
    comparisons: str = "",
) -> str:
    ok = [j for j in jobs if j.status == "ok"]
    failed = [j for j in jobs if j.status != "ok"]
    columns = [c for c in REPORT_COLUMNS if c not in ("status", "reason")]
    has_quality = any(j.kind == "train" for j in ok)
    if not has_quality:  # a profile sweep: no accuracy columns
        quality = ("acc", "f1_macro", "balanced_acc", "valence_ccc", "arousal_ccc")
        columns = [c for c in columns if c not in quality]
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
    parts.append(comparisons)
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


#: Overrides that do not tell a matrix's group apart (the seeds' checkpoints differ).
_PER_SEED = ("seed", "ckpt_path", "ckpt_paths")


def _cross_dataset(jobs: Sequence[JobResult], out: Path) -> tuple[dict[str, Path], list[str], str]:
    """The jobs' ``cross_dataset.csv`` gathered (:mod:`fersuite.reporting.cross_dataset`)."""
    found = []
    for j in jobs:
        keep = [o for o in j.varying_overrides if o.lstrip("+~").partition("=")[0] not in _PER_SEED]
        found.append((j.job, " ".join(keep), seed_of(j.overrides), j.path))
    paths, refused, tables = gather_cross_dataset(found, out)
    for line in refused:
        log.warning("not gathered: %s", line)
    return paths, refused, tables


def write_sweep_report(
    sweep_dirs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    metric: str = "test/acc",
    pairs: Sequence[Any] | None = None,
    curve_window: int = 3,
    equivalence_margin: Any = None,
) -> SweepReport:
    """Gather a multirun (or several) and write the report files into ``out_dir``.

    Writes ``report.csv``, ``report.md``, ``pareto.png`` (``metric`` vs. MACs, when at least
    one finished job has both), ``report_grouped.csv`` (training jobs grouped by their
    overrides without ``seed``: :mod:`fersuite.reporting.seeds`; with several seeds per config
    the Pareto plot shows the groups' means with 95% error bars and ``report.md`` a grouped
    table and paired differences) and, when jobs wrote ``profile.json``, the merged
    ``profile.json`` / ``profile.csv`` (one record per model). Jobs' cross-dataset matrices
    (``cross_dataset.csv`` of ``fersuite-eval ckpt_paths=... datasets=...``) are gathered into
    ``cross_dataset.csv`` and ``cross_dataset.png`` (mean accuracy over the seeds); a job's file
    that is refused is named in one line in ``report.md`` (and ``cross_refused``).
    ``out_dir`` defaults to the (first) sweep dir.

    ``pairs``: the groups to compare, each ``[A, B]`` or ``"A vs B"`` with A and B overrides
    that pick one group (:func:`fersuite.reporting.seeds.select_group`); None compares every
    group with the first. Training jobs also get ``learning_curves.png`` (the validation
    counterpart of ``metric`` per epoch, mean over seeds) and a convergence table
    (:mod:`fersuite.reporting.curves`, ``curve_window`` epochs).

    With two or more trained configs, ``report_comparisons.csv`` and the "Comparisons" section
    test each pair per headline metric over the shared seeds, Holm-corrected
    (:mod:`fersuite.reporting.compare`). ``equivalence_margin``: a number for every metric or
    a mapping metric -> margin (``{}``: none); None takes ``report.equivalence_margin`` as the
    sweep's jobs recorded it in ``.hydra/config.yaml`` (none if they did not). A bad value
    raises :class:`fersuite.errors.ConfigError` naming the key.
    """
    dirs = [sweep_dirs] if isinstance(sweep_dirs, str | os.PathLike) else list(sweep_dirs)
    if not dirs:
        raise ValueError("no sweep dir given")
    jobs = collect_sweep(dirs)
    margins = (
        recorded_margins(jobs)
        if equivalence_margin is None
        else equivalence_margins(equivalence_margin, "equivalence_margin")
    )
    out = Path(out_dir) if out_dir is not None else Path(dirs[0])
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}

    write_csv(out / "report.csv", [j.row() for j in jobs], REPORT_COLUMNS)
    paths["csv"] = out / "report.csv"

    trained = [j for j in jobs if j.kind == "train"]
    groups = group_jobs(trained)
    if groups:
        paths["grouped"] = write_grouped_csv(out / "report_grouped.csv", groups, tuple(SOURCES))
    seeded = list(groups) if any(len(g.jobs) > 1 for g in groups) else []
    if seeded:
        pareto, note = _pareto_groups(seeded, metric, out / "pareto.png")
    else:
        names = {id(j): g.name for g in groups for j in g.jobs}  # as the learning curves say
        pareto, note = _pareto(jobs, metric, out / "pareto.png", names)
    if pareto is not None:
        paths["pareto"] = pareto

    compared = compare_groups(groups, pairs, margins) if len(groups) >= 2 else Comparisons()
    if len(groups) >= 2:
        paths["comparisons"] = write_comparisons_csv(out / "report_comparisons.csv", compared)

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

    cross_paths, cross_refused, cross_tables = _cross_dataset(jobs, out)
    paths.update(cross_paths)

    title = "Sweep report: " + ", ".join(str(Path(d)) for d in dirs)
    text = _markdown(
        title, jobs, pareto, note, metric, seeded, pairs, curves_md, comparisons_markdown(compared)
    )
    if cross_paths or cross_refused:
        text += "\n## Cross-dataset matrices\n\n"
        if cross_paths:
            text += (
                "The jobs' `cross_dataset.csv` lines: `cross_dataset.csv`; mean accuracy over "
                "seeds: `cross_dataset.png`.\n" + cross_tables
            )
        text += "".join(f"\n- not gathered: {line}" for line in cross_refused)
        text += "\n" if cross_refused else ""
    atomic_write(out / "report.md", lambda fh: fh.write(text))
    paths["md"] = out / "report.md"
    return SweepReport(
        jobs=jobs,
        paths=paths,
        pareto_note=note,
        groups=seeded,
        pairs=list(pairs) if pairs is not None else None,
        convergence=conv,
        comparisons=compared,
        cross_refused=cross_refused,
    )
