"""A study's verdicts from a committed ``report.csv``: ``report_comparisons.csv`` and
``comparisons.md`` next to it.

    .venv/bin/python experiments/studies/verdicts.py experiments/study_zoo/results
    .venv/bin/python experiments/studies/verdicts.py experiments/study_lightweight/results_12ep \
        --experiment study_lightweight

The results folders keep ``report.csv`` but not the job dirs, so the jobs are rebuilt from its
rows (:class:`fersuite.reporting.jobs.JobResult`, the metric columns as ``test/<metric>``;
with a ``cross_dataset.csv`` beside it, each job's figures on each test set as
``cross/<dataset>/<metric>``, as ``fersuite-train datasets=[...]`` records them),
grouped by :func:`fersuite.reporting.seeds.group_jobs` and compared by
:func:`fersuite.reporting.compare.compare_groups`: the ``pairs`` of
``hydra.callbacks.sweep_report`` in ``conf/experiment/<experiment>.yaml`` (none: every group
against the first), the margins ``report.equivalence_margin`` of ``conf/train.yaml``. Without
``predictions_test.csv`` there are no per-sample rows, only the paired t-tests over seeds.

``--experiment`` defaults to the name of the folder holding the results folder. Bad input
(a missing file or column, a value that is not a finite number, an unknown preset): one line
naming the file (and row), exit status 2.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

import yaml

from fersuite.config import CONFIG_DIR, MARGIN_KEY, equivalence_margins
from fersuite.errors import ConfigError
from fersuite.reporting.compare import (
    Comparisons,
    compare_groups,
    comparisons_markdown,
    write_comparisons_csv,
)
from fersuite.reporting.jobs import SOURCES, JobResult
from fersuite.reporting.seeds import group_jobs

#: Columns every report.csv row needs.
REQUIRED = ("job", "status", "model", "overrides")
#: report.csv column -> metrics key, for the columns that come from metrics.json.
METRIC_COLUMNS = {col: key for col, (key, _) in SOURCES.items() if key and key.startswith("test/")}


class BadInputError(Exception):
    """Input that cannot be used; the message is one line naming the file (and row)."""


def read_jobs(path: Path) -> list[JobResult]:
    """The jobs of a ``report.csv``: one :class:`JobResult` per row, metrics as floats."""
    try:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [c for c in REQUIRED if c not in header]
            if missing:
                raise BadInputError(f"{path}: no column(s) {', '.join(missing)} in the header")
            present = [c for c in METRIC_COLUMNS if c in header]
            if not present:
                raise BadInputError(
                    f"{path}: none of the metric columns {', '.join(METRIC_COLUMNS)}"
                )
            jobs = [_job(path, n, row, present) for n, row in enumerate(reader, start=2)]
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path}: not a readable CSV ({exc})") from None
    if not jobs:
        raise BadInputError(f"{path}: no job rows")
    return jobs


def _finite(row: dict[str, Any], column: str, where: str) -> float | None:
    """The cell ``column`` of ``row`` as a finite number (None when empty)."""
    text = (row.get(column) or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise BadInputError(f"{where}: {column}={text!r}; expected a finite number")
    return value


def _job(path: Path, line: int, row: dict[str, Any], columns: list[str]) -> JobResult:
    where = f"{path}, row {line}"
    if None in row or any(row.get(c) is None for c in REQUIRED):
        raise BadInputError(f"{where}: the row does not have as many cells as the header")
    status = row["status"].strip()
    if status not in ("ok", "failed"):
        raise BadInputError(f"{where}: status {status!r}; expected 'ok' or 'failed'")
    metrics = {}
    for column in columns:
        value = _finite(row, column, where)
        if value is not None:
            metrics[METRIC_COLUMNS[column]] = value
    if status == "ok" and not metrics:
        raise BadInputError(f"{where}: status ok but no metric value")
    return JobResult(
        job=row["job"],
        path=path.parent / "jobs-not-kept" / row["job"],  # no predictions_test.csv: seed rows only
        status=status,
        kind="train",
        overrides=row["overrides"].split(),
        model=row["model"],
        metrics=metrics,
    )


#: cross_dataset.csv columns -> metrics key ``cross/<dataset>/<column>`` (the figures a job's
#: ``fersuite-train datasets=[...]`` adds to its metrics.json).
CROSS_METRICS = ("acc", "balanced_acc", "f1_macro", "valence_ccc", "arousal_ccc")
#: At most this many rows in a cross_dataset.csv (jobs x test sets).
MAX_CROSS_ROWS = 100_000


def add_cross_metrics(path: Path, jobs: list[JobResult]) -> list[JobResult]:
    """The jobs with the figures of ``path`` (a sweep report's ``cross_dataset.csv``: ``job``,
    ``dataset`` and the metric columns) as their ``cross/<dataset>/<metric>`` keys."""
    by_job = {j.job: j for j in jobs}
    extra: dict[str, dict[str, float]] = {}
    try:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [c for c in ("job", "dataset") if c not in header]
            if missing:
                raise BadInputError(f"{path}: no column(s) {', '.join(missing)} in the header")
            for line, row in enumerate(reader, start=2):
                where = f"{path}, row {line}"
                if line > MAX_CROSS_ROWS:
                    raise BadInputError(f"{path}: more than {MAX_CROSS_ROWS} rows")
                if None in row or row.get("job") not in by_job:
                    raise BadInputError(f"{where}: job {row.get('job')!r} is not in report.csv")
                dataset = (row.get("dataset") or "").strip()
                if not dataset or len(dataset) > 200 or "/" in dataset:
                    raise BadInputError(f"{where}: dataset {dataset[:40]!r}; expected a name")
                for column in CROSS_METRICS:
                    value = _finite(row, column, where)
                    if value is not None:
                        extra.setdefault(row["job"], {})[f"cross/{dataset}/{column}"] = value
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path}: not a readable CSV ({exc})") from None
    return [
        dataclasses.replace(j, metrics={**j.metrics, **extra[j.job]}) if j.job in extra else j
        for j in jobs
    ]


def _yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise BadInputError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None


def study_pairs(experiment: str, conf: Path = Path(CONFIG_DIR)) -> list[Any] | None:
    """``hydra.callbacks.sweep_report.pairs`` of ``conf/experiment/<experiment>.yaml``."""
    path = conf / "experiment" / f"{experiment}.yaml"
    if not path.is_file():
        raise BadInputError(f"{path}: no such preset (--experiment {experiment})")
    cfg = _yaml(path) or {}
    node: Any = cfg
    for key in ("hydra", "callbacks", "sweep_report", "pairs"):
        node = node.get(key) if isinstance(node, dict) else None
    if node is not None and not isinstance(node, list):
        raise BadInputError(f"{path}: hydra.callbacks.sweep_report.pairs is not a list")
    return node


def default_margins(conf: Path = Path(CONFIG_DIR)) -> dict[str, float]:
    """``report.equivalence_margin`` of ``conf/train.yaml``, validated."""
    path = conf / "train.yaml"
    cfg = _yaml(path) or {}
    value: Any = cfg
    for key in MARGIN_KEY.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    try:
        return equivalence_margins(value)
    except ConfigError as exc:
        raise BadInputError(f"{path}: {exc}") from None


def verdicts(results: Path, experiment: str) -> Comparisons:
    """Compare the groups of ``results/report.csv`` as the study's preset says."""
    jobs = read_jobs(results / "report.csv")
    if (results / "cross_dataset.csv").is_file():
        jobs = add_cross_metrics(results / "cross_dataset.csv", jobs)
    groups = group_jobs(jobs)
    if len(groups) < 2:
        raise BadInputError(f"{results / 'report.csv'}: {len(groups)} finished config(s); need 2")
    compared = compare_groups(groups, study_pairs(experiment), default_margins())
    if not compared.rows:
        more = f"; {len(compared.notes) - 1} more" if len(compared.notes) > 1 else ""
        why = f" ({compared.notes[0]}{more})" if compared.notes else ""
        raise BadInputError(f"{results / 'report.csv'}: nothing compared{why}")
    return compared


def write(results: Path, experiment: str, compared: Comparisons) -> tuple[Path, Path]:
    csv_path = write_comparisons_csv(results / "report_comparisons.csv", compared)
    md_path = results / "comparisons.md"
    cross = " and `cross_dataset.csv`" if (results / "cross_dataset.csv").is_file() else ""
    md_path.write_text(
        f"# Comparisons: {experiment}, `{results.name}/`\n\n"
        f"Rebuilt from `report.csv`{cross} (the job dirs are not kept, so there are no "
        "per-sample rows) "
        "by `experiments/studies/verdicts.py`; margins: `report.equivalence_margin` of "
        "`conf/train.yaml`.\n" + comparisons_markdown(compared)
    )
    return csv_path, md_path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, help="a folder holding report.csv")
    ap.add_argument("--experiment", help="the study's preset (default: the parent folder's name)")
    args = ap.parse_args(argv)
    experiment = args.experiment or args.results.resolve().parent.name
    try:
        compared = verdicts(args.results, experiment)
    except BadInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for note in compared.notes:
        print(f"note: {note}", file=sys.stderr)
    paths = write(args.results, experiment, compared)
    counts: dict[str, int] = {}
    for row in compared.rows:
        counts[row.verdict] = counts.get(row.verdict, 0) + 1
    summary = ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
    print(f"{args.results}: {len(compared.rows)} comparisons ({summary}); wrote "
          f"{', '.join(str(p) for p in paths)}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
