"""``fersuite-report``: one table and a Pareto plot for a Hydra multirun.

Usage::

    fersuite-report logs/train/multiruns/2025-01-01_12-00-00
    fersuite-report SWEEP_A SWEEP_B --out reports/combined --metric test/f1_macro

Writes ``report.csv``, ``report.md`` and ``pareto.png`` (and, for profile sweeps, the merged
``profile.json`` / ``profile.csv``) into the sweep dir or ``--out``. Every multirun also gets
this report automatically through :class:`SweepReportCallback`, registered in
``fersuite/conf/hydra/default.yaml`` under ``hydra.callbacks``: it refreshes the report after
each job (so a sweep aborted by a failing job still has one) and once more when the multirun
ends.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("fersuite.report")

__all__ = ["SweepReportCallback", "main", "print_report"]


def print_report(report: Any, console: Any = None) -> None:
    """A rich table of a :class:`~fersuite.reporting.sweep.SweepReport` on the terminal."""
    from rich.table import Table

    from fersuite.profiling import format_macs
    from fersuite.utils.console import make_console

    console = console or make_console()
    table = Table(title="fersuite sweep report")
    for col, justify in [
        ("job", "left"),
        ("status", "left"),
        ("model", "left"),
        ("overrides", "left"),
        ("acc", "right"),
        ("macro-F1", "right"),
        ("V CCC", "right"),
        ("A CCC", "right"),
        ("params", "right"),
        ("MACs", "right"),
        ("latency b1", "right"),
    ]:
        table.add_column(col, justify=justify)  # type: ignore[arg-type]

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    for job in report.jobs:
        macs = job.value("macs")
        params = job.value("params")
        lat = job.value("latency_ms_b1")
        table.add_row(
            job.job,
            "[green]ok[/]" if job.status == "ok" else "[red]failed[/]",
            job.model,
            " ".join(job.varying_overrides),
            num(job.value("acc"), ".4f"),
            num(job.value("f1_macro"), ".4f"),
            num(job.value("valence_ccc"), ".3f"),
            num(job.value("arousal_ccc"), ".3f"),
            "-" if params is None else f"{params / 1e6:.2f} M",
            "-" if macs is None else format_macs(macs),
            "-" if lat is None else f"{lat:.2f} ms ({job.latency_label()})",
        )
    console.print(table)
    for job in report.failed:
        console.print(f"[red]failed[/] job {job.job}: {job.reason}")
    if report.pareto_note:
        console.print(report.pareto_note)
    for name, path in report.paths.items():
        console.print(f"{name}: {path}")


def _record_failure(hydra_cfg: Any, job_return: Any) -> None:
    """Write the exception of a failed job to ``<job dir>/error.txt`` (one line)."""
    from hydra.core.utils import JobStatus

    if job_return is None or getattr(job_return, "status", None) != JobStatus.FAILED:
        return
    try:
        job_return.return_value  # noqa: B018 - re-raises the job's exception
        return
    except Exception as exc:  # noqa: BLE001
        text = str(exc).strip().splitlines()
        line = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    try:
        from fersuite.reporting.sweep import ERROR_FILE
        from fersuite.utils.io import atomic_write

        out = Path(str(hydra_cfg.runtime.output_dir)) / ERROR_FILE
        atomic_write(out, lambda fh: fh.write(line[:500] + "\n"))
    except Exception as exc:  # noqa: BLE001
        log.warning("could not record the failure of a job: %s", exc)


class SweepReportCallback(Callback):
    """Hydra callback: writes the sweep report during and at the end of every multirun.

    Args:
        metric: quality axis of the Pareto plot (a ``metrics.json`` key).
        after_each_job: refresh the report after every job, not only at the end.
    """

    def __init__(self, metric: str = "test/acc", after_each_job: bool = True) -> None:
        self.metric = metric
        self.after_each_job = after_each_job

    def _write(self, sweep_dir: str) -> None:
        from fersuite.reporting.sweep import write_sweep_report

        try:
            report = write_sweep_report(sweep_dir, metric=self.metric)
        except Exception as exc:  # noqa: BLE001 - a report must never fail a finished sweep
            log.error(
                "sweep report for %s failed: %s (retry with `fersuite-report %s`)",
                sweep_dir,
                exc,
                sweep_dir,
            )
            return
        log.info("sweep report: %s", report.paths.get("md"))

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from hydra.types import RunMode

        hydra_cfg = config.get("hydra")
        if hydra_cfg is None or hydra_cfg.mode != RunMode.MULTIRUN:
            return
        _record_failure(hydra_cfg, job_return)
        if self.after_each_job:
            self._write(str(hydra_cfg.sweep.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from fersuite.apps import note_multirun

        # The app's exit status counts this sweep's failed jobs (fersuite.apps.run_app).
        note_multirun(str(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._write(str(config.hydra.sweep.dir))


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
