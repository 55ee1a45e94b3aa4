"""A model summary: modules to a given depth with their parameters and MACs.

Lightning's ``ModelSummary`` lists parameters only; this table adds the MACs per module from the
same fvcore count the run already makes (:func:`fersuite.profiling.count_macs`), so the summary
costs no extra trace. Printed once when a training run starts
(``callbacks.efficiency.summary_depth``).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from fersuite.profiling.macs import MacsReport, format_count, format_macs


@dataclass(frozen=True)
class SummaryRow:
    """One module of the summary (``name`` is its qualified name, ``depth`` its nesting)."""

    name: str
    kind: str
    depth: int
    params: int
    macs: int


def summary_rows(net: nn.Module, macs: MacsReport, depth: int = 2) -> list[SummaryRow]:
    """Modules of ``net`` down to ``depth`` levels (1: its children), in definition order.

    Parameters are counted per module (shared ones once within it); MACs come from
    ``macs.by_submodule`` (0 for modules the traced forward pass never called)."""
    rows = []
    for name, module in net.named_modules():
        level = name.count(".") + 1 if name else 0
        if not 1 <= level <= depth:
            continue
        params = sum(p.numel() for p in module.parameters())
        rows.append(
            SummaryRow(name, type(module).__name__, level, params, macs.by_submodule.get(name, 0))
        )
    return rows


def format_summary(
    rows: list[SummaryRow], total_params: int, macs: MacsReport, input_shape: tuple[int, ...]
) -> str:
    """A plain-text table: module, type, params, MACs and their share of the total."""
    header = ("module", "type", "params", "MACs", "% MACs")
    lines = [header]
    for r in rows:
        share = f"{100 * r.macs / macs.total:.1f}" if macs.total else "-"
        name = "  " * (r.depth - 1) + r.name
        lines.append((name, r.kind, format_count(r.params), format_macs(r.macs), share))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for i, line in enumerate(lines):
        cells = [
            cell.ljust(w) if c < 2 else cell.rjust(w)
            for c, (cell, w) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    shape = "x".join(str(d) for d in input_shape)
    total = f"{format_count(total_params)} params, {format_macs(macs.total)}"
    out.append(f"total: {total} per {shape} input")
    return "\n".join(out)
