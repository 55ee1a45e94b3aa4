"""Copy a study's sweep report into ``experiments/<study>/results/`` and print its wall time.

    PYTHONPATH=src python experiments/studies/collect.py study_zoo logs/study_zoo/multiruns/<time>
    PYTHONPATH=src python experiments/studies/collect.py study_lightweight SWEEP_A SWEEP_B

``--only arm=a arm=b`` keeps the jobs with one of those overrides (e.g. the arms another study
shares with this one, run with the same data and schedule).

The report is rebuilt from the sweep dir(s) with :func:`fersuite.reporting.sweep.write_sweep_report`
(the pairs the preset names, read from the first sweep's ``multirun.yaml``), so the README's
tables are the report's own. Its comparisons, per-sample tests included, are kept as
``report_comparisons_per_sample.csv``; ``report_comparisons.csv`` and ``comparisons.md`` are
then rebuilt from ``report.csv`` by ``verdicts.py`` (the seed-level tests), as every committed
results folder holds them: the job dirs are not committed, so that is the table a reader can
rebuild. Wall time: from the first job's start to the last ``metrics.json`` written.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import yaml
from verdicts import BadInputError, verdicts, write

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


#: Where the sweep report's ``report.md`` points at its full comparisons table.
ALL_ROWS = "All rows: `report_comparisons.csv`."
PER_SAMPLE = "report_comparisons_per_sample.csv"


def split_comparisons(out: Path, study: str) -> bool:
    """Keep the sweep's comparisons of ``out`` as ``report_comparisons_per_sample.csv`` and
    rebuild ``report_comparisons.csv`` and ``comparisons.md`` from ``report.csv`` (the
    seed-level tests); False when the sweep compared nothing."""
    table = out / "report_comparisons.csv"
    if not table.is_file():
        return False
    compared = verdicts(out, study)  # before anything is moved: a refusal changes nothing
    table.replace(out / PER_SAMPLE)
    write(out, study, compared)
    md = out / "report.md"
    pointer = (
        f"All rows: `{PER_SAMPLE}` (`report_comparisons.csv` and `comparisons.md`: the "
        "seed-level tests only, rebuilt from `report.csv` by `experiments/studies/verdicts.py`)."
    )
    text = md.read_text()
    # the report's own pointer, or (should its wording change) the pointer at the end
    text = (
        text.replace(ALL_ROWS, pointer) if ALL_ROWS in text else f"{text.rstrip()}\n\n{pointer}\n"
    )
    md.write_text(text)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study")
    ap.add_argument("sweeps", nargs="+", type=Path)
    ap.add_argument("--only", nargs="+", default=None, help="keep jobs with one of these overrides")
    ap.add_argument("--name", default="results", help="output folder inside experiments/<study>/")
    args = ap.parse_args(argv)
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
        split = split_comparisons(out, args.study)
    except BadInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(tmp)
    for sweep in args.sweeps:
        jobs = sorted(sweep.glob("*/metrics.json"))
        print(f"{sweep}: {len(jobs)} jobs finished, wall time {_wall_s(sweep) / 60:.1f} min")
    print(f"wrote {', '.join(str(p) for p in report.paths.values())}")
    if split:
        print(f"the sweep's comparisons kept as {out / PER_SAMPLE}; report_comparisons.csv "
              "and comparisons.md rebuilt by verdicts.py (seed-level tests)")  # fmt: skip
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
