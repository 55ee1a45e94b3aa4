"""``fersuite-report``: one table and a Pareto plot for a Hydra multirun.

Usage::

    fersuite-report logs/train/multiruns/2025-01-01_12-00-00
    fersuite-report SWEEP_A SWEEP_B --out reports/combined --metric test/f1_macro

Writes ``report.csv``, ``report.md`` and ``pareto.png`` (and, for profile sweeps, the merged
``profile.json`` / ``profile.csv``) into the sweep dir or ``--out``
(:func:`fersuite.reporting.sweep.write_sweep_report`). Every multirun also gets this report
automatically through :class:`fersuite.reporting.hydra_callback.SweepReportCallback`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from fersuite.reporting.terminal import print_report

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """argparse, answering a bad command line with one line (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv: Sequence[str] | None = None) -> int:
    """The exit status of ``fersuite-report argv...``. Without ``argv`` (the console script)
    it runs under :func:`fersuite.apps.run_app` (a failed run: traceback, exit 1)."""
    if argv is None:
        from fersuite.apps import run_app

        run_app("report", main, sys.argv[1:])
        return 0
    parser = _Parser(
        prog="fersuite-report",
        description="Gather the jobs of Hydra multirun dir(s) into report.csv, report.md and "
        "pareto.png (accuracy vs. MACs); failed jobs are listed, not dropped.",
    )
    parser.add_argument("sweep_dirs", nargs="+", type=Path, help="multirun dir(s)")
    parser.add_argument(
        "--out", type=Path, default=None, help="output dir (default: the first sweep dir)"
    )
    parser.add_argument(
        "--metric", default="test/acc", help="metrics.json key on the Pareto plot's y axis"
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 1 when any job failed"
    )
    args = parser.parse_args(argv)

    from fersuite.reporting.sweep import write_sweep_report

    try:
        report = write_sweep_report(args.sweep_dirs, out_dir=args.out, metric=args.metric)
    except (FileNotFoundError, ValueError) as exc:
        print(f"fersuite-report: error: {exc}", file=sys.stderr)
        return 2
    print_report(report)
    return 1 if (args.strict and report.failed) else 0


if __name__ == "__main__":
    sys.exit(main())
