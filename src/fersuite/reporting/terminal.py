"""The sweep report (:class:`~fersuite.reporting.sweep.SweepReport`) as a table on the
terminal."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from fersuite.profiling import format_macs
from fersuite.utils.console import make_console

__all__ = ["print_report"]


def print_report(report: Any, console: Any = None) -> None:
    """A rich table of a :class:`~fersuite.reporting.sweep.SweepReport` on the terminal."""

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
    groups = getattr(report, "groups", [])
    if groups:
        _print_groups(groups, console)
        for diff in report.paired:
            console.print(f"paired: {diff}")
    for job in report.failed:
        console.print(f"[red]failed[/] job {job.job}: {job.reason}")
    if report.pareto_note:
        console.print(report.pareto_note)
    for name, path in report.paths.items():
        console.print(f"{name}: {path}")


def _print_groups(groups: Any, console: Any) -> None:
    """Configs run with several seeds: mean ± 95% half-width (Student t)."""

    table = Table(title="seeds aggregated (mean ± 95% CI)")
    for col in ("config", "seeds", "acc", "macro-F1", "V CCC", "A CCC"):
        table.add_column(col, justify="left" if col == "config" else "right")
    for g in groups:
        cells = [str(g.stat(c)) for c in ("acc", "f1_macro", "valence_ccc", "arousal_ccc")]
        table.add_row(g.name, str(len(g.jobs)), *cells)
    console.print(table)
