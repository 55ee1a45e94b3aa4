"""Copy a study's sweep report into ``experiments/<study>/results/`` and print its wall time.

    PYTHONPATH=src python experiments/studies/collect.py study_zoo logs/study_zoo/multiruns/<time>
    PYTHONPATH=src python experiments/studies/collect.py study_lightweight SWEEP_A SWEEP_B

``--only arm=a arm=b`` keeps the jobs with one of those overrides (e.g. the arms another study
shares with this one, run with the same data and schedule).

``--reuse REPORT_CSV --reuse-only arm=a arm=b`` adds the rows of another study's committed
``report.csv`` that have one of those overrides (jobs of the same config whose dirs are gone,
e.g. the zoo's): they join ``report.csv`` with the job named ``<study>/<job>``, and
``report_grouped.csv``, ``report_comparisons.csv`` and ``comparisons.md`` are rebuilt over all
rows (:mod:`verdicts`, the seed-level tests only); ``report.md``, the plots and their per-sample
tests stay those of the swept jobs, and say so.

The report is rebuilt from the sweep dir(s) with :func:`fersuite.reporting.sweep.write_sweep_report`
(the pairs the preset names, read from the first sweep's ``multirun.yaml``), so the README's
tables are the report's own. Wall time: from the first job's start to the last
``metrics.json`` written.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
from pathlib import Path

import yaml
from verdicts import BadInputError, read_jobs, verdicts, write

from fersuite.reporting.jobs import REPORT_COLUMNS, SOURCES
from fersuite.reporting.seeds import group_jobs, write_grouped_csv
from fersuite.reporting.sweep import write_sweep_report

HERE = Path(__file__).resolve().parent


def _pairs(sweep: Path) -> list | None:
    cfg = yaml.safe_load((sweep / "multirun.yaml").read_text())
    return ((cfg.get("hydra") or {}).get("callbacks") or {}).get("sweep_report", {}).get("pairs")


def _wall_s(sweep: Path) -> float:
    """From the first job's start (its ``.hydra`` dir) to the last ``metrics.json`` written."""
    starts = [p.stat().st_mtime for p in sweep.glob("*/.hydra/overrides.yaml")]
    ends = [p.stat().st_mtime for p in sweep.glob("*/metrics.json")]
    return (max(ends) - min(starts)) if ends and starts else float("nan")


def _select(sweeps: list[Path], only: list[str], tmp: Path) -> list[Path]:
    """Views of the sweeps holding only the jobs with one of the ``only`` overrides."""
    out = []
    for i, sweep in enumerate(sweeps):
        view = tmp / str(i) / sweep.name  # sweeps of two studies may share a dir name
        view.mkdir(parents=True)
        (view / "multirun.yaml").symlink_to((sweep / "multirun.yaml").resolve())
        for job in sweep.iterdir():
            ov = job / ".hydra" / "overrides.yaml"
            if ov.is_file() and set(yaml.safe_load(ov.read_text())) & set(only):
                (view / job.name).symlink_to(job.resolve())
        out.append(view)
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if list(reader.fieldnames or []) != list(REPORT_COLUMNS):
            raise BadInputError(f"{path}: expected the columns {','.join(REPORT_COLUMNS)}")
        return list(reader)


def reuse_rows(out: Path, study: str, source: Path, only: list[str]) -> int:
    """Append the rows of ``source`` (a committed ``report.csv``) with one of the ``only``
    overrides to ``out/report.csv``, then rebuild the grouped table and the comparisons over
    all rows; the number of rows added."""
    read_jobs(source)  # validated as verdicts.py reads it
    label = source.resolve().parent.parent.name
    mine = _rows(out / "report.csv")
    taken = [
        {**row, "job": f"{label}/{row['job']}"}
        for row in _rows(source)
        if set(row["overrides"].split()) & set(only)
    ]
    if not taken:
        raise BadInputError(f"{source}: no row with one of the overrides {' '.join(only)}")
    swept = out / "report_comparisons.csv"
    if swept.is_file():
        swept.replace(out / "report_comparisons_per_sample.csv")
    with (out / "report.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=REPORT_COLUMNS)
        writer.writeheader()
        writer.writerows(mine + taken)
    write_grouped_csv(
        out / "report_grouped.csv", group_jobs(read_jobs(out / "report.csv")), tuple(SOURCES)
    )
    write(out, study, verdicts(out, study))
    md = out / "report.md"
    kinds = " or ".join(f"`{o}`" for o in only)
    md.write_text(
        f"{md.read_text().rstrip()}\n\n## Jobs reused from `{source}`\n\n"
        f"`report.csv` also holds the {len(taken)} job(s) of that report with {kinds} "
        f"(named `{label}/<job>`; their dirs are not kept). `report_grouped.csv`, "
        "`report_comparisons.csv` and `comparisons.md` are over all rows (the seed-level tests "
        "only; the swept jobs' table with its per-sample tests is "
        "`report_comparisons_per_sample.csv`); the tables and plots above are the swept jobs'.\n"
    )
    return len(taken)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study")
    ap.add_argument("sweeps", nargs="+", type=Path)
    ap.add_argument("--only", nargs="+", default=None, help="keep jobs with one of these overrides")
    ap.add_argument("--name", default="results", help="output folder inside experiments/<study>/")
    ap.add_argument("--reuse", type=Path, help="a committed report.csv to take jobs from")
    ap.add_argument("--reuse-only", nargs="+", default=None, help="the overrides of those jobs")
    args = ap.parse_args(argv)
    if (args.reuse is None) != (args.reuse_only is None):
        ap.error("--reuse and --reuse-only go together")
    out = HERE.parent / args.study / args.name
    tmp = Path(tempfile.mkdtemp())
    try:
        dirs = _select(args.sweeps, args.only, tmp) if args.only else args.sweeps
        report = write_sweep_report(dirs, out_dir=out, pairs=_pairs(args.sweeps[0]))
        md = report.paths["md"]
        text = md.read_text()
        for view, sweep in zip(dirs, args.sweeps, strict=True):
            text = text.replace(str(view), str(sweep))  # name the sweeps, not the views
        md.write_text(text)
    finally:
        shutil.rmtree(tmp)
    if args.reuse is not None:
        try:
            added = reuse_rows(out, args.study, args.reuse, args.reuse_only)
        except BadInputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"reused {added} job(s) of {args.reuse}; comparisons rebuilt over all rows")
    for sweep in args.sweeps:
        jobs = sorted(sweep.glob("*/metrics.json"))
        print(f"{sweep}: {len(jobs)} jobs finished, wall time {_wall_s(sweep) / 60:.1f} min")
    print(f"wrote {', '.join(str(p) for p in report.paths.values())}")
    for d in report.paired:
        print(f"paired: {d}")
    for c in report.convergence:
        print(
            f"convergence: {c.group}: epochs {c.epochs}, best epochs (from 0) {c.best_epochs}, "
            f"best {c.best:.4f}, last-3 gain {c.late_gain:+.4f} ± {c.late_gain_ci95:.4f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
