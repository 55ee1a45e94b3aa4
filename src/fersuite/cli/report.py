"""``fersuite-report``: one table and a Pareto plot for a Hydra multirun.

Usage::

    fersuite-report sweeps=logs/train/multiruns/2025-01-01_12-00-00
    fersuite-report sweeps=[SWEEP_A,SWEEP_B] out=reports/combined metric=test/f1_macro strict=true
    fersuite-report sweeps=SWEEP equivalence_margin=0.01
    fersuite-report sweeps=SWEEP 'equivalence_margin={acc: 0.02, valence_ccc: 0.05}'
    fersuite-report SWEEP_A SWEEP_B --out reports/combined --metric test/f1_macro --strict

Arguments are Hydra-style ``key=value`` (:data:`KEYS`, :mod:`fersuite.cli._args`); a command
line without any ``key=value`` (or with a ``--option``) is read in the older argparse form
above. Writes ``report.csv``, ``report.md`` and ``pareto.png`` (and, for profile sweeps, the
merged ``profile.json`` / ``profile.csv``) into the first sweep dir or ``out``
(:func:`fersuite.reporting.sweep.write_sweep_report`), and ``report_comparisons.csv``: each
pair per headline metric, Holm-corrected, with a verdict (:mod:`fersuite.reporting.compare`).
Every multirun also gets this report automatically through
:class:`fersuite.reporting.hydra_callback.SweepReportCallback`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from fersuite.apps import run_app
from fersuite.cli._args import Key, help_text, parse_keys, wants_help
from fersuite.config import equivalence_margins
from fersuite.errors import UserError
from fersuite.reporting.sweep import write_sweep_report
from fersuite.reporting.terminal import print_report

__all__ = ["KEYS", "main", "parse_args"]

KEYS = [
    Key("sweeps", None, "multirun dir, or a list [DIR_A,DIR_B] combined into one report"),
    Key("out", None, "output dir (null: the first sweep dir)"),
    Key("metric", "test/acc", "metrics.json key on the Pareto plot's y axis"),
    Key("strict", False, "exit with status 1 when any job failed"),
    Key(
        "pairs",
        None,
        'groups to compare, e.g. ["arm=a vs arm=b"] (null: every group against the first)',
    ),
    Key(
        "equivalence_margin",
        None,
        "equivalence ±margin: a number or {acc: 0.02, ...} (null: the sweep's own)",
    ),
]
HELP = help_text(
    "fersuite-report",
    "One table and a Pareto plot (metric vs. MACs) for Hydra multirun dir(s).",
    [
        "fersuite-report sweeps=<dir>|[<dir>,...] [key=value ...]",
        "fersuite-report DIR [DIR ...] [--out DIR] [--metric KEY] [--strict]   (older form)",
    ],
    KEYS,
    "Writes report.csv, report.md, report_comparisons.csv and pareto.png (profile sweeps:\n"
    "profile.json/.csv) into out; failed jobs are listed with their reason, not dropped.\n"
    "Comparisons: b - a per metric over shared seeds, Holm-corrected p, a verdict\n"
    "(better / worse / equivalent within ±equivalence_margin / inconclusive).",
)


class _Parser(argparse.ArgumentParser):
    """argparse, answering a bad command line with one line (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _legacy_args(argv: Sequence[str]) -> dict[str, Any]:
    parser = _Parser(prog="fersuite-report", add_help=False)
    parser.add_argument("sweeps", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--metric", default="test/acc")
    parser.add_argument("--strict", action="store_true")
    return vars(parser.parse_args(argv))


def _path(key: str, value: Any) -> Path:
    if isinstance(value, bool) or not isinstance(value, str | int | float) or value == "":
        raise UserError(f"{key}={value!r}; expected a directory")
    return Path(str(value))


def parse_args(argv: Sequence[str]) -> dict[str, Any]:
    """``sweeps`` (list of paths), ``out``, ``metric`` and ``strict`` from either form."""
    legacy = not any("=" in a for a in argv) or any(a.startswith("-") for a in argv)
    if legacy:
        mixed = [a for a in argv if a.split("=", 1)[0] in {k.name for k in KEYS}]
        if mixed:
            raise UserError(f"{mixed}: use either key=value arguments or the --option form")
        return _legacy_args(argv)
    cfg = parse_keys(argv, KEYS)
    sweeps = cfg["sweeps"]
    if sweeps is None or sweeps == []:
        raise UserError("sweeps=<multirun dir> (or sweeps=[DIR_A,DIR_B]) is required")
    items = sweeps if isinstance(sweeps, list) else [sweeps]
    cfg["sweeps"] = [_path("sweeps", s) for s in items]
    cfg["out"] = None if cfg["out"] is None else _path("out", cfg["out"])
    if not isinstance(cfg["metric"], str) or not cfg["metric"]:
        raise UserError(f"metric={cfg['metric']!r}; expected a metrics.json key, e.g. test/acc")
    if not isinstance(cfg["strict"], bool):
        raise UserError(f"strict={cfg['strict']!r}; expected true or false")
    pairs = cfg.get("pairs")
    if pairs is not None:
        ok = isinstance(pairs, list) and all(
            (isinstance(p, str) and " vs " in p)
            or (isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p))
            for p in pairs
        )
        if not ok:
            raise UserError(
                f"pairs={pairs!r}; expected a list of 'A vs B' (A, B: overrides that pick one "
                'group), e.g. pairs=["arm=a vs arm=b"]'
            )
    if cfg["equivalence_margin"] is not None:
        cfg["equivalence_margin"] = equivalence_margins(
            cfg["equivalence_margin"], "equivalence_margin"
        )
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    """The exit status of ``fersuite-report argv...``. Without ``argv`` (the console script)
    it runs under :func:`fersuite.apps.run_app` (a failed run: traceback, exit 1)."""
    if argv is None:
        run_app("report", main, sys.argv[1:])
        return 0
    if wants_help(argv):
        print(HELP, end="")
        return 0

    try:
        args = parse_args(argv)
        report = write_sweep_report(
            args["sweeps"],
            out_dir=args["out"],
            metric=args["metric"],
            pairs=args.get("pairs"),
            equivalence_margin=args.get("equivalence_margin"),
        )
    except (UserError, FileNotFoundError, ValueError) as exc:
        print(f"fersuite-report: error: {exc}", file=sys.stderr)
        return 2
    print_report(report)
    return 1 if (args["strict"] and report.failed) else 0


if __name__ == "__main__":
    sys.exit(main())
