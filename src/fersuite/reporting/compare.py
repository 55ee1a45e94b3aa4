"""A study's comparisons with multiple-comparison control: ``report_comparisons.csv``.

For each compared pair ``(a, b)`` of configs (the ``pairs`` of the sweep report; by default every
config against the first) and each headline metric the jobs have (:data:`HEADLINE_METRICS`),
over the seeds both configs ran (jobs are paired by their ``seed=`` override):

* ``diff`` = mean over the shared seeds of ``b - a`` (``a`` is the reference: a positive
  ``diff`` means ``b`` scored higher); ``ci_low``/``ci_high``: its Student-t 95% interval;
  ``p``: the two-sided paired t-test (``b`` vs ``a``, ``n_seeds - 1`` degrees of freedom).
  With fewer than two shared seeds ``p`` is empty and the verdict ``inconclusive``.
* ``p_holm``: ``p`` adjusted by Holm's step-down method over **every** row of the report that
  has a ``p`` (all pairs, all metrics, and the per-sample rows below): one family, so the
  chance of any false ``better``/``worse`` in the report is at most :data:`ALPHA`.
* ``verdict``: ``better`` / ``worse`` (``b`` relative to ``a``) when ``p_holm < ALPHA``;
  else ``equivalent`` when the equivalence test below rejects; else ``inconclusive`` (no
  difference detected, which is not evidence of equivalence).
* Equivalence (TOST, two one-sided tests) within ``±margin`` (``report.equivalence_margin``,
  per metric): H0 ``diff <= -margin`` and H0 ``diff >= +margin``, each a one-sided t-test at
  ALPHA; both reject exactly when their larger p-value is below ALPHA (the intersection-union
  test, no split of ALPHA). Those p-values ``max(p_lower, p_upper)`` of every row with a margin
  form a **second Holm family**, so the chance of any false ``equivalent`` is at most ALPHA.
  A metric without a margin (or margin 0) is never ``equivalent``.

Cross-dataset test sets (``fersuite-train datasets=[...]``): besides ``test/<metric>``, a pair
is compared on every ``cross/<dataset>/<metric>`` key (a headline metric) that jobs of both
configs have, as above, one row each with the metric column ``<dataset>/<metric>`` (e.g.
``synthetic_b/acc``) and the margin of ``<metric>``; these rows are in both Holm families. When
the two configs were trained (and so tested) on different data (their jobs' ``data=``
overrides differ; no override counts as the default), their ``test/*`` figures come from
different test sets: those rows and the per-sample rows below are left out, with a note
saying the pair was compared on the cross-dataset test sets only.

When every shared seed of both configs left a ``predictions_test.csv`` in its job dir (read by
:func:`fersuite.reporting.run_report.read_predictions`) on one test set (the same indices and
targets everywhere), accuracy is also compared per test sample:

* ``acc_bootstrap``: a paired bootstrap over the test samples. One replicate draws the test set
  with replacement (the same draw for every seed and both configs, since they were all scored
  on this one test set) and takes the mean over seeds of ``acc(b) - acc(a)`` on it; ``diff`` is
  that statistic on the real test set, ``ci_low``/``ci_high`` the 2.5/97.5 percentiles of
  :data:`N_BOOTSTRAP` replicates (``numpy.random.default_rng(BOOTSTRAP_SEED)``), ``p`` the
  two-sided percentile p-value ``min(1, 2 * min(#{d* <= 0} + 1, #{d* >= 0} + 1) / (B + 1))``.
  It measures test-set sampling error for these trained models (the seed row measures the
  seed-to-seed spread). Its ``p`` is in the Holm family; its equivalence test is the same
  percentile test against ``±margin`` (``acc`` margin), in the equivalence family.
* ``acc_mcnemar_seed<k>``: McNemar's exact test for seed ``k`` (``n_seeds`` 1): of the samples
  exactly one config got right, is ``b`` right as often as ``a``? (two-sided binomial test of
  the discordant counts, p = 1/2). ``diff`` is ``acc(b) - acc(a)`` of that seed; no interval,
  no margin. One row per seed (the seeds share the test set, so their tests are not independent
  and are not pooled); each is in the Holm family.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy import stats

from fersuite.config import HEADLINE_METRICS, equivalence_margins
from fersuite.errors import ConfigError, UserError
from fersuite.reporting.run_report import PREDICTIONS_FILE, read_predictions
from fersuite.reporting.seeds import Group, seed_of, select_group
from fersuite.reporting.tables import markdown_table, write_csv

__all__ = [
    "ALPHA",
    "COLUMNS",
    "HEADLINE_METRICS",
    "Comparison",
    "Comparisons",
    "bootstrap_accuracy",
    "compare_groups",
    "comparisons_markdown",
    "equivalence_margins",
    "holm",
    "mcnemar_exact",
    "paired_t",
    "recorded_margins",
    "tost",
    "write_comparisons_csv",
]

#: The columns of ``report_comparisons.csv``, in order.
COLUMNS = ("metric", "a", "b", "n_seeds", "diff", "ci_low", "ci_high", "p", "p_holm", "margin",
           "verdict")  # fmt: skip
#: The metrics compared (``test/<name>`` in ``metrics.json``), whichever the jobs have.
#: Family-wise error rate of each Holm family (differences; equivalences).
ALPHA = 0.05
N_BOOTSTRAP = 2000
BOOTSTRAP_SEED = 0
#: The config key of the margins (``conf/train.yaml``).


# --------------------------------------------------------------------------------------------
# the statistics
# --------------------------------------------------------------------------------------------


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: the i-th smallest p times
    ``m - i + 1`` (i from 1), made non-decreasing in that order, capped at 1."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    out = [1.0] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * float(pvalues[i])))
        out[i] = running
    return out


def _spread(diffs: np.ndarray) -> tuple[float, float]:
    """Mean and standard error; a spread within rounding of the mean counts as zero."""
    mean = float(diffs.mean())
    sd = float(diffs.std(ddof=1))
    if sd <= 1e-12 * max(1.0, abs(mean)):
        sd = 0.0
    return mean, sd / math.sqrt(len(diffs))


def paired_t(diffs: Sequence[float]) -> tuple[float, float, float, float]:
    """``(mean, ci_low, ci_high, p)`` of per-seed differences: Student-t 95% interval and the
    two-sided one-sample t-test of mean 0 (= the paired t-test of the two arms). Needs n >= 2.
    Differences without spread: the limit of the t statistic (p 0 when the mean is not 0, 1
    when it is)."""
    d = np.asarray(diffs, dtype=float)
    n = len(d)
    if n < 2:
        raise ValueError(f"a paired t-test needs >= 2 differences, got {n}")
    mean, se = _spread(d)
    half = float(stats.t.ppf(0.975, n - 1)) * se
    if se == 0.0:
        p = 1.0 if mean == 0.0 else 0.0
    else:
        p = float(2.0 * stats.t.sf(abs(mean / se), n - 1))
    return mean, mean - half, mean + half, min(1.0, p)


def tost(diffs: Sequence[float], margin: float) -> float:
    """p-value of the two one-sided t-tests of H0 ``mean <= -margin`` and H0 ``mean >=
    margin``: the larger of the two (both reject at alpha exactly when it is below alpha)."""
    d = np.asarray(diffs, dtype=float)
    n = len(d)
    if n < 2:
        raise ValueError(f"TOST needs >= 2 differences, got {n}")
    mean, se = _spread(d)
    if se == 0.0:
        return 0.0 if abs(mean) < margin else 1.0
    p_lower = float(stats.t.sf((mean + margin) / se, n - 1))  # H0: mean <= -margin
    p_upper = float(stats.t.cdf((mean - margin) / se, n - 1))  # H0: mean >= +margin
    return max(p_lower, p_upper)


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Two-sided exact McNemar p-value of two classifiers on the same samples: a binomial test
    (p = 1/2) of the samples only ``b`` got right among those exactly one got right."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    only_b, only_a = int((b & ~a).sum()), int((a & ~b).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(stats.binomtest(only_b, only_a + only_b, 0.5).pvalue)


@dataclass(frozen=True)
class Bootstrap:
    """A paired bootstrap of the accuracy difference (see the module docstring)."""

    diff: float
    ci_low: float
    ci_high: float
    p: float
    #: Percentile TOST p-value against ``±margin`` (None without a margin).
    p_equivalence: float | None


def bootstrap_accuracy(
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    margin: float | None = None,
    n_boot: int = N_BOOTSTRAP,
    seed: int = BOOTSTRAP_SEED,
) -> Bootstrap:
    """Paired bootstrap of ``mean over seeds of acc(b) - acc(a)``: ``correct_*`` are (seeds,
    samples) booleans on one test set; each replicate resamples the samples (one draw for all
    seeds and both arms)."""
    a = np.atleast_2d(np.asarray(correct_a, dtype=float))
    b = np.atleast_2d(np.asarray(correct_b, dtype=float))
    if a.shape != b.shape or a.shape[1] == 0:
        raise ValueError(f"correct_a {a.shape} and correct_b {b.shape}: expected one shape")
    per_sample = (b - a).mean(axis=0)  # the statistic is the mean of this over the samples
    n = per_sample.shape[0]
    rng = np.random.default_rng(seed)
    reps = np.empty(n_boot)
    chunk = max(1, 4_000_000 // n)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        reps[start:stop] = per_sample[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    lo, hi = np.percentile(reps, [2.5, 97.5])
    below, above = int((reps <= 0).sum()), int((reps >= 0).sum())
    p = min(1.0, 2.0 * (min(below, above) + 1) / (n_boot + 1))
    p_eq = None
    if margin is not None:
        p_eq = max(int((reps <= -margin).sum()) + 1, int((reps >= margin).sum()) + 1) / (n_boot + 1)
    return Bootstrap(float(per_sample.mean()), float(lo), float(hi), p, p_eq)


# --------------------------------------------------------------------------------------------
# margins
# --------------------------------------------------------------------------------------------


def recorded_margins(jobs: Sequence[Any]) -> dict[str, float]:
    """The margins the sweep ran with: ``report.equivalence_margin`` of the first job whose
    ``.hydra/config.yaml`` has it (none: no margins)."""
    for job in jobs:
        path = Path(job.path) / ".hydra" / "config.yaml"
        try:
            cfg = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        report = cfg.get("report") if isinstance(cfg, dict) else None
        if isinstance(report, dict) and "equivalence_margin" in report:
            try:
                return equivalence_margins(report["equivalence_margin"])
            except ConfigError as exc:
                raise ConfigError(f"{path}: {exc}") from None
    return {}


# --------------------------------------------------------------------------------------------
# comparing groups
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """One row of ``report_comparisons.csv`` (and its equivalence test, not a CSV column)."""

    metric: str
    a: str
    b: str
    n_seeds: int
    diff: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    p: float | None = None
    p_holm: float | None = None
    margin: float | None = None
    verdict: str = "inconclusive"
    #: The TOST p-value (None: no margin or < 2 seeds) and its Holm-adjusted value.
    p_equivalence: float | None = None
    p_equivalence_holm: float | None = None

    def row(self) -> dict[str, Any]:
        return {c: getattr(self, c) for c in COLUMNS}


@dataclass
class Comparisons:
    """The rows of a report and the pairs that could not be compared (one line each)."""

    rows: list[Comparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    margins: dict[str, float] = field(default_factory=dict)
    alpha: float = ALPHA

    @property
    def n_tests(self) -> int:
        return sum(r.p is not None for r in self.rows)


def _by_seed(group: Group, key: str) -> dict[str, float]:
    """The ``metrics.json`` value of ``key`` per seed of ``group``."""
    out = {}
    for j in group.jobs:
        seed, v = seed_of(j.overrides), j.metrics.get(key)
        if seed is not None and v is not None and math.isfinite(v):
            out[seed] = float(v)
    return out


#: A training run's figure on a cross-dataset test set: ``cross/<dataset>/<metric>``.
CROSS_PREFIX = "cross/"


def _cross_keys(group: Group) -> set[tuple[str, str]]:
    """``(dataset, metric)`` of the ``cross/<dataset>/<metric>`` keys of ``group``'s jobs (a
    headline metric; the matrix keys of fersuite-eval, ``cross/<row>/<dataset>/acc``, are
    not these)."""
    found = set()
    for j in group.jobs:
        for key in j.metrics:
            parts = key.split("/")
            if len(parts) == 3 and key.startswith(CROSS_PREFIX) and parts[2] in HEADLINE_METRICS:
                found.add((parts[1], parts[2]))
    return found


def _data_override(overrides: Sequence[str]) -> str:
    """The ``data=`` override of a job ("" where none was given: the default)."""
    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        if key == "data":
            return value
    return ""


def _data_of(group: Group) -> str:
    """The ``data=`` overrides of ``group``'s jobs (one, as the group's jobs differ in seed)."""
    return ",".join(sorted({_data_override(j.overrides) for j in group.jobs}))


def _seed_rows(
    a: Group, b: Group, margins: Mapping[str, float], metrics: Sequence[tuple[str, str, str]]
) -> list[Comparison]:
    """One row per ``(label, metrics.json key, margin name)`` of ``metrics`` both ran."""
    rows = []
    for label, key, margin_of in metrics:
        va, vb = _by_seed(a, key), _by_seed(b, key)
        shared = [s for s in va if s in vb]
        if not shared:
            continue
        diffs = [vb[s] - va[s] for s in shared]
        margin = margins.get(margin_of)
        base = Comparison(label, a.name, b.name, len(shared), diffs[0], margin=margin)
        if len(diffs) < 2:
            rows.append(base)
            continue
        mean, lo, hi, p = paired_t(diffs)
        p_eq = tost(diffs, margin) if margin is not None else None
        rows.append(replace(base, diff=mean, ci_low=lo, ci_high=hi, p=p, p_equivalence=p_eq))
    return rows


def _pair_metrics(a: Group, b: Group) -> tuple[list[tuple[str, str, str]], str]:
    """What a pair is compared on, ``(label, key, margin name)``: ``test/<metric>`` (unless
    the configs were trained on different data) and the cross-dataset test sets both have;
    and a note when ``test/*`` was left out ("" otherwise)."""
    order = {m: i for i, m in enumerate(HEADLINE_METRICS)}
    shared = sorted(_cross_keys(a) & _cross_keys(b), key=lambda dm: (dm[0], order[dm[1]]))
    cross = [(f"{d}/{m}", f"{CROSS_PREFIX}{d}/{m}", m) for d, m in shared]
    data_a, data_b = _data_of(a), _data_of(b)
    if data_a == data_b:
        return [(m, f"test/{m}", m) for m in HEADLINE_METRICS] + cross, ""
    what = (
        f"{b.name} vs {a.name}: trained and tested on different data "
        f"(data={data_b or '(default)'} vs data={data_a or '(default)'})"
    )
    if cross:
        datasets = ", ".join(dict.fromkeys(d for d, _ in shared))
        only = f"compared on the cross-dataset test sets only ({datasets})"
        return cross, f"{what}: test/* not compared; {only}"
    return cross, (
        f"not compared: {what}, and no cross-dataset test set both ran "
        "(fersuite-train datasets=[...] tests each job on the same test sets)"
    )


def _job_for(group: Group, seed: str) -> Any:
    found = None
    for j in group.jobs:
        if seed_of(j.overrides) == seed:
            found = j  # the last one, as Group.by_seed
    return found


def _correct(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(index, target, correct) of a predictions file, sorted by index."""
    read = read_predictions(path)
    index, target, pred = np.asarray(read.index), np.asarray(read.target), np.asarray(read.pred)
    order = np.argsort(index, kind="stable")
    return index[order], target[order], (pred == target)[order]


def _sample_rows(
    a: Group, b: Group, margins: Mapping[str, float], n_boot: int, boot_seed: int
) -> tuple[list[Comparison], str]:
    """The per-sample accuracy rows of one pair, or why there are none ("" when neither
    config wrote predictions)."""
    seeds_b = {seed_of(j.overrides) for j in b.jobs}
    seeds = [s for s in dict.fromkeys(seed_of(j.overrides) for j in a.jobs) if s in seeds_b]
    seeds = [s for s in seeds if s is not None]
    files = {
        (g.name, s): Path(_job_for(g, s).path) / PREDICTIONS_FILE for g in (a, b) for s in seeds
    }
    have = [f for f in files.values() if f.is_file()]
    if not have:
        return [], ""
    what = f"per-sample accuracy tests of {b.name} vs {a.name} skipped"
    if len(have) < len(files) or not seeds:
        missing = sorted(str(f) for f in files.values() if not f.is_file())
        return [], f"{what}: {len(missing)} shared-seed job(s) have no {PREDICTIONS_FILE}"
    try:
        read = {k: _correct(f) for k, f in files.items()}
    except (UserError, ValueError, OSError, KeyError) as exc:
        return [], f"{what}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    first_index, first_target, _ = next(iter(read.values()))
    for (name, seed), (index, target, _) in read.items():
        if not (np.array_equal(index, first_index) and np.array_equal(target, first_target)):
            return [], (
                f"{what}: the test set of {name} seed {seed} differs from the others (indices or "
                "targets)"
            )
    if len(first_index) == 0:
        return [], f"{what}: the predictions are empty"
    ca = np.stack([read[(a.name, s)][2] for s in seeds])
    cb = np.stack([read[(b.name, s)][2] for s in seeds])
    margin = margins.get("acc")
    boot = bootstrap_accuracy(ca, cb, margin, n_boot, boot_seed)
    rows = [
        Comparison(
            "acc_bootstrap",
            a.name,
            b.name,
            len(seeds),
            boot.diff,
            ci_low=boot.ci_low,
            ci_high=boot.ci_high,
            p=boot.p,
            margin=margin,
            p_equivalence=boot.p_equivalence,
        )
    ]
    for k, seed in enumerate(seeds):
        diff = float(cb[k].mean() - ca[k].mean())
        p = mcnemar_exact(ca[k], cb[k])
        rows.append(Comparison(f"acc_mcnemar_seed{seed}", a.name, b.name, 1, diff, p=p))
    return rows, ""


def _chosen(groups: Sequence[Group], pairs: Sequence[Any] | None) -> tuple[list, list[str]]:
    if pairs is None:
        return [(groups[0], g) for g in groups[1:]], []
    chosen, missing = [], []
    for p in pairs:
        parts = [x.strip() for x in p.split(" vs ")] if isinstance(p, str) else [str(x) for x in p]
        try:
            if len(parts) != 2 or not all(parts):
                raise ValueError(f"pairs: {p!r}; expected [A, B] or 'A vs B' (group overrides)")
            chosen.append((select_group(groups, parts[0]), select_group(groups, parts[1])))
        except ValueError as exc:
            missing.append(f"not compared: {exc}")
    return chosen, missing


def _verdict(row: Comparison, alpha: float) -> str:
    if row.p_holm is not None and row.p_holm < alpha and row.diff:
        return "better" if row.diff > 0 else "worse"
    if row.p_equivalence_holm is not None and row.p_equivalence_holm < alpha:
        return "equivalent"
    return "inconclusive"


def compare_groups(
    groups: Sequence[Group],
    pairs: Sequence[Any] | None = None,
    margins: Mapping[str, float] | None = None,
    alpha: float = ALPHA,
    n_boot: int = N_BOOTSTRAP,
    boot_seed: int = BOOTSTRAP_SEED,
) -> Comparisons:
    """Every comparison of the report (see the module docstring), Holm-adjusted together."""
    margins = dict(margins or {})
    result = Comparisons(margins=margins, alpha=alpha)
    if len(groups) < 2 and pairs is None:
        return result
    chosen, result.notes = _chosen(groups, pairs)
    rows: list[Comparison] = []
    for a, b in chosen:
        metrics, data_note = _pair_metrics(a, b)
        if data_note:
            result.notes.append(data_note)
        seed_rows = _seed_rows(a, b, margins, metrics)
        if not seed_rows and pairs is not None and not data_note:  # a chosen pair
            result.notes.append(
                f"not compared: {b.name} vs {a.name}: no seed both ran has a test metric"
            )
        sample_rows: list[Comparison] = []
        if not data_note:  # different data: their predictions are of different test sets
            sample_rows, why = _sample_rows(a, b, margins, n_boot, boot_seed)
            if why:
                result.notes.append(why)
        rows += seed_rows + sample_rows
    tested = [i for i, r in enumerate(rows) if r.p is not None]
    for i, adj in zip(tested, holm([rows[i].p for i in tested]), strict=True):
        rows[i] = replace(rows[i], p_holm=adj)
    eq = [i for i, r in enumerate(rows) if r.p_equivalence is not None]
    for i, adj in zip(eq, holm([rows[i].p_equivalence for i in eq]), strict=True):
        rows[i] = replace(rows[i], p_equivalence_holm=adj)
    result.rows = [replace(r, verdict=_verdict(r, alpha)) for r in rows]
    return result


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def write_comparisons_csv(path: str | Path, comparisons: Comparisons) -> Path:
    """``report_comparisons.csv``: the columns :data:`COLUMNS`, one row per comparison."""
    write_csv(Path(path), [r.row() for r in comparisons.rows], COLUMNS)
    return Path(path)


def _signed(v: Any) -> str:
    return f"{float(v):+.4f}"


def _pvalue(v: Any) -> str:
    return f"{float(v):.3g}" if float(v) >= 0.001 else "<0.001"


def comparisons_markdown(comparisons: Comparisons) -> str:
    """The "Comparisons" section of ``report.md`` ("" when nothing was compared)."""
    if not comparisons.rows and not comparisons.notes:
        return ""
    alpha = comparisons.alpha
    n_eq = sum(r.p_equivalence is not None for r in comparisons.rows)
    margins = ", ".join(f"{k} ±{v:g}" for k, v in comparisons.margins.items()) or "none"
    parts = [
        "\n## Comparisons\n\n",
        f"`diff` = b − a (mean over the seeds both ran; `a` is the reference), 95% interval, "
        f"two-sided paired t-test `p`. `p_holm` is Holm-corrected over all "
        f"{comparisons.n_tests} tests in this table (family-wise error ≤ {alpha:g}); "
        f"`equivalent` means both one-sided tests (TOST) against ±margin reject after a Holm "
        f"correction over the {n_eq} equivalence tests, and `inconclusive` means no difference "
        f"was detected, not that the configs are equivalent. Margins: {margins}. "
        "`acc_bootstrap`: paired bootstrap over the test samples; `acc_mcnemar_seed<k>`: "
        "McNemar's exact test of seed k.",
    ]
    if any("/" in r.metric for r in comparisons.rows):
        parts.append(
            " `<dataset>/<metric>`: the metric on that cross-dataset test set "
            "(`fersuite-train datasets=[...]`), with the margin of `<metric>`."
        )
    parts.append(" All rows: `report_comparisons.csv`.\n\n")
    if comparisons.rows:
        formats = {
            "diff": _signed,
            "ci_low": _signed,
            "ci_high": _signed,
            "p": _pvalue,
            "p_holm": _pvalue,
            "margin": lambda v: f"±{float(v):g}",
            "verdict": lambda v: f"**{v}**" if v != "inconclusive" else str(v),
        }
        parts.append(markdown_table([r.row() for r in comparisons.rows], COLUMNS, {}, formats))
    if comparisons.notes:
        parts.append("\n")
        parts += [f"- {n}\n" for n in comparisons.notes]
    return "".join(parts)
