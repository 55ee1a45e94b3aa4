"""Seeds aggregated: jobs whose overrides differ only in ``seed`` form one group, reported as
mean, sample standard deviation and the half-width of the Student-t 95% interval.

``report_grouped.csv`` has the columns ``group``, ``n``, ``seeds``, then for every report figure
(accuracy, macro-F1, balanced accuracy, VA CCC, params, MACs, latency, throughput)
``<figure>_mean``, ``<figure>_std`` (n - 1 in the denominator) and ``<figure>_ci95``
(``t(0.975, n - 1) * std / sqrt(n)``; empty when n < 2). A *paired* comparison of two groups
uses the seeds both ran: the mean of the per-seed differences and its 95% interval, which
removes the seed-to-seed variation the two configs share.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scipy import stats

from fersuite.reporting.tables import write_csv

__all__ = [
    "Group",
    "MeanCI",
    "PairedDifference",
    "group_jobs",
    "mean_ci",
    "paired_difference",
    "paired_differences",
    "select_group",
    "write_grouped_csv",
]

#: The quality columns a paired comparison reports.
PAIRED_COLUMNS = ("acc", "f1_macro", "balanced_acc", "valence_ccc", "arousal_ccc")


@dataclass(frozen=True)
class MeanCI:
    """Mean, sample standard deviation and 95% half-width of ``n`` values (NaN when n < 2)."""

    n: int
    mean: float
    std: float
    ci95: float

    def __str__(self) -> str:
        if self.n < 2:
            return f"{self.mean:.4g}"
        return f"{self.mean:.4g} ± {self.ci95:.2g}"


def mean_ci(values: Sequence[float]) -> MeanCI:
    """Student-t interval of the mean (n - 1 degrees of freedom)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(vals)
    if n == 0:
        return MeanCI(0, math.nan, math.nan, math.nan)
    mean = sum(vals) / n
    if n < 2:
        return MeanCI(1, mean, math.nan, math.nan)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return MeanCI(n, mean, std, half)


def seed_of(overrides: Sequence[str]) -> str | None:
    """The ``seed=`` value among a job's overrides (None when the seed was not overridden)."""
    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        if key == "seed":
            return value
    return None


def _without_seed(overrides: Sequence[str]) -> tuple[str, ...]:
    return tuple(o for o in overrides if o.lstrip("+~").partition("=")[0] != "seed")


@dataclass
class Group:
    """Finished jobs whose overrides are equal apart from ``seed``."""

    name: str
    jobs: list[Any] = field(default_factory=list)

    @property
    def seeds(self) -> list[str | None]:
        return [seed_of(j.overrides) for j in self.jobs]

    def values(self, column: str) -> list[float]:
        out = []
        for j in self.jobs:
            v = j.value(column)
            if v is not None and math.isfinite(v):
                out.append(v)
        return out

    def stat(self, column: str) -> MeanCI:
        return mean_ci(self.values(column))

    def metric(self, key: str) -> MeanCI:
        """Mean and interval of a ``metrics.json`` key (e.g. ``test/acc``)."""
        return mean_ci([j.metrics[key] for j in self.jobs if key in j.metrics])

    def by_seed(self, column: str) -> dict[str, float]:
        out = {}
        for j in self.jobs:
            seed, v = seed_of(j.overrides), j.value(column)
            if seed is not None and v is not None and math.isfinite(v):
                out[seed] = v
        return out

    def row(self, columns: Sequence[str]) -> dict[str, Any]:
        """``group``, ``n``, ``seeds`` and mean/std/ci95 of each report column."""
        seeds = [s for s in self.seeds if s is not None]
        out: dict[str, Any] = {"group": self.name, "n": len(self.jobs), "seeds": " ".join(seeds)}
        for column in columns:
            s = self.stat(column)
            for suffix, value in (("mean", s.mean), ("std", s.std), ("ci95", s.ci95)):
                out[f"{column}_{suffix}"] = None if math.isnan(value) else value
        return out


def group_jobs(jobs: Sequence[Any]) -> list[Group]:
    """Finished jobs grouped by their overrides without ``seed``, in first-seen order. A group
    is named by the overrides that tell it from the other groups (its model label when
    only the seed varies)."""
    groups: dict[tuple[str, ...], Group] = {}
    for j in jobs:
        if j.status != "ok":
            continue
        key = _without_seed(j.overrides)
        if key not in groups:
            name = " ".join(_without_seed(j.varying_overrides)) or j.model
            groups[key] = Group(name)
        groups[key].jobs.append(j)
    return list(groups.values())


def write_grouped_csv(
    path: str | os.PathLike[str], groups: Sequence[Group], columns: Sequence[str]
) -> Path:
    """``report_grouped.csv``: one row per group, ``columns`` aggregated."""
    stats_ = [f"{c}_{s}" for c in columns for s in ("mean", "std", "ci95")]
    header = ["group", "n", "seeds", *stats_]
    write_csv(Path(path), [g.row(columns) for g in groups], header)
    return Path(path)


@dataclass(frozen=True)
class PairedDifference:
    """``b - a`` over the seeds both groups ran."""

    a: str
    b: str
    column: str
    seeds: tuple[str, ...]
    diff: MeanCI

    def __str__(self) -> str:
        d = self.diff
        if d.n < 2:
            return (
                f"{self.column}: {self.b} - {self.a} needs >= 2 shared seeds "
                f"(shared: {list(self.seeds)})"
            )
        lo, hi = d.mean - d.ci95, d.mean + d.ci95
        verdict = "interval includes 0" if lo <= 0 <= hi else "interval excludes 0"
        return (
            f"{self.column}: {self.b} - {self.a} = {d.mean:+.4f} "
            f"(95% CI [{lo:+.4f}, {hi:+.4f}], paired over seeds {', '.join(self.seeds)}): "
            f"{verdict} (uncorrected)"
        )


def paired_difference(a: Group, b: Group, column: str = "acc") -> PairedDifference:
    """The per-seed differences ``b - a`` of ``column`` over the seeds both groups ran."""
    va, vb = a.by_seed(column), b.by_seed(column)
    shared = tuple(s for s in va if s in vb)
    return PairedDifference(
        a.name, b.name, column, shared, mean_ci([vb[s] - va[s] for s in shared])
    )


def select_group(groups: Sequence[Group], spec: str) -> Group:
    """The one group whose name holds every override of ``spec`` (space-separated, e.g.
    ``"arm=resnet18"``; ``"arm=lightweight_cnn"`` does not match ``arm=lightweight_cnn_050``)."""
    want = set(str(spec).split())
    found = [g for g in groups if want and want <= set(g.name.split())]
    if len(found) != 1:
        names = ", ".join(repr(g.name) for g in groups)
        what = "no group" if not found else f"{len(found)} groups"
        raise ValueError(f"pairs: {what} matched {spec!r}; expected exactly one of {names}")
    return found[0]


def _pair_specs(pairs: Sequence[Any]) -> list[tuple[str, str]]:
    out = []
    for p in pairs:
        parts = [x.strip() for x in p.split(" vs ")] if isinstance(p, str) else [str(x) for x in p]
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"pairs: {p!r}; expected [A, B] or 'A vs B' (group overrides)")
        out.append((parts[0], parts[1]))
    return out


def paired_differences(
    groups: Sequence[Group], pairs: Sequence[Any] | None = None
) -> list[PairedDifference]:
    """``B - A`` for each pair ``(A, B)`` of group specs (:func:`select_group`), or every
    group against the first when ``pairs`` is None, for the quality columns where the two
    share at least two seeds."""
    if pairs is None:
        chosen = [(groups[0], g) for g in groups[1:]]
    else:
        chosen = [(select_group(groups, a), select_group(groups, b)) for a, b in _pair_specs(pairs)]
    out = []
    for a, b in chosen:
        for column in PAIRED_COLUMNS:
            diff = paired_difference(a, b, column)
            if diff.diff.n >= 2:
                out.append(diff)
    return out
