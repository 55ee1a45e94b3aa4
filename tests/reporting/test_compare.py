"""Comparisons with multiple-comparison control (fersuite.reporting.compare): each statistic
against a reference implementation (statsmodels' Holm, scipy's paired / one-sided t-tests and
binomial test, scipy's bootstrap), then report_comparisons.csv of crafted sweeps end to end."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf
from scipy import stats
from statsmodels.stats.multitest import multipletests

from fersuite.config import HEADLINE_METRICS, equivalence_margins
from fersuite.errors import ConfigError
from fersuite.reporting.compare import (
    COLUMNS,
    bootstrap_accuracy,
    holm,
    mcnemar_exact,
    paired_t,
    tost,
)
from fersuite.reporting.hydra_callback import SweepReportCallback
from fersuite.reporting.sweep import write_sweep_report
from tests.reporting.test_sweep_report import _job

# --- the statistics against reference implementations -------------------------------------


@pytest.mark.parametrize(
    "pvalues",
    [
        [0.01, 0.04, 0.03, 0.005],
        [0.2, 0.2, 0.01, 0.5, 0.04, 0.04],  # ties
        [0.9, 0.95, 0.6],  # adjusted values capped at 1
        [0.003],
        list(np.random.default_rng(3).uniform(0, 0.1, size=25)),
    ],
)
def test_holm_matches_statsmodels(pvalues: list[float]) -> None:
    expected = multipletests(pvalues, method="holm")[1]
    assert holm(pvalues) == pytest.approx(list(expected), abs=1e-12)


def test_holm_of_nothing_is_nothing() -> None:
    assert holm([]) == []


def test_paired_t_matches_scipy_ttest_rel() -> None:
    a = np.array([0.700, 0.712, 0.695, 0.705, 0.690])
    b = np.array([0.712, 0.719, 0.701, 0.720, 0.691])
    mean, lo, hi, p = paired_t(b - a)
    ref = stats.ttest_rel(b, a)
    ci = ref.confidence_interval(0.95)
    assert mean == pytest.approx(float(np.mean(b - a)))
    assert (lo, hi) == pytest.approx((ci.low, ci.high))
    assert p == pytest.approx(ref.pvalue)
    # The sign: b - a, so swapping the arms flips the interval, not the p-value.
    mean2, lo2, hi2, p2 = paired_t(a - b)
    assert (mean2, lo2, hi2) == pytest.approx((-mean, -hi, -lo)) and p2 == pytest.approx(p)
    with pytest.raises(ValueError, match=">= 2"):
        paired_t([0.1])


def test_paired_t_without_spread_takes_the_limit() -> None:
    assert paired_t([0.03, 0.03, 0.03])[3] == 0.0  # t -> infinity
    assert paired_t([0.0, 0.0, 0.0])[3] == 1.0


@pytest.mark.parametrize("margin", [0.01, 0.02, 0.05])
def test_tost_matches_two_one_sided_scipy_tests(margin: float) -> None:
    d = np.array([0.004, -0.006, 0.011, -0.002, 0.003, 0.007])
    lower = stats.ttest_1samp(d, -margin, alternative="greater").pvalue
    upper = stats.ttest_1samp(d, margin, alternative="less").pvalue
    assert tost(d, margin) == pytest.approx(max(lower, upper))


def test_tost_rejects_only_inside_the_margin() -> None:
    d = [0.001, -0.002, 0.002, 0.0, -0.001]
    assert tost(d, 0.02) < 0.001
    assert tost(d, 0.0) >= 0.5  # margin 0: never equivalent
    shifted = [x + 0.03 for x in d]
    assert tost(shifted, 0.02) > 0.5


def _pair(n11: int, n10: int, n01: int, n00: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample correctness of a and b with the 2x2 table: n10 = a right, b wrong."""
    a = np.array([1] * n11 + [1] * n10 + [0] * n01 + [0] * n00, dtype=bool)
    b = np.array([1] * n11 + [0] * n10 + [1] * n01 + [0] * n00, dtype=bool)
    order = np.random.default_rng(0).permutation(len(a))
    return a[order], b[order]


@pytest.mark.parametrize("table", [(50, 3, 12, 35), (40, 9, 9, 42), (10, 0, 6, 4), (70, 1, 0, 29)])
def test_mcnemar_matches_binomtest_on_the_discordant_cells(table: tuple[int, ...]) -> None:
    n11, n10, n01, n00 = table
    a, b = _pair(n11, n10, n01, n00)
    expected = stats.binomtest(n01, n01 + n10, 0.5, alternative="two-sided").pvalue
    assert mcnemar_exact(a, b) == pytest.approx(expected)
    assert mcnemar_exact(b, a) == pytest.approx(expected)


def test_mcnemar_without_discordant_samples_is_one() -> None:
    a, b = _pair(30, 0, 0, 20)
    assert mcnemar_exact(a, b) == 1.0


def test_bootstrap_matches_scipy_percentile_bootstrap() -> None:
    rng = np.random.default_rng(1)
    a = rng.random(600) < 0.70
    b = np.where(rng.random(600) < 0.2, ~a, a)  # b differs from a on about 20% of samples
    got = bootstrap_accuracy(a, b, n_boot=4000, seed=5)
    d = b.astype(float) - a.astype(float)
    assert got.diff == pytest.approx(d.mean())
    ref = stats.bootstrap(
        (d,), np.mean, n_resamples=4000, method="percentile", random_state=11
    ).confidence_interval
    se = d.std(ddof=1) / math.sqrt(len(d))
    # Two random bootstraps of the same data: equal up to Monte-Carlo error.
    assert got.ci_low == pytest.approx(ref.low, abs=0.25 * se)
    assert got.ci_high == pytest.approx(ref.high, abs=0.25 * se)
    # The two-sided percentile p-value: close to the normal approximation of the mean.
    normal_p = 2 * stats.norm.sf(abs(d.mean()) / se)
    assert got.p == pytest.approx(normal_p, abs=0.03)
    again = bootstrap_accuracy(a, b, n_boot=4000, seed=5)
    assert again == got  # a seeded RNG: the same numbers every time


def test_bootstrap_draws_one_test_set_for_every_seed() -> None:
    """Seeds scored on one test set are resampled together: two seeds whose per-sample
    differences cancel give no spread at all."""
    rng = np.random.default_rng(2)
    a0 = rng.random(300) < 0.6
    b0 = np.where(rng.random(300) < 0.3, ~a0, a0)
    a, b = np.stack([a0, b0]), np.stack([b0, a0])  # seed 1: the arms' answers swapped
    assert abs(b[0].mean() - a[0].mean()) > 0.01  # each seed alone shows a difference
    got = bootstrap_accuracy(a, b, margin=0.01, n_boot=500)
    assert got.diff == pytest.approx(0.0, abs=1e-12)
    assert got.ci_low == pytest.approx(0.0, abs=1e-12) and got.ci_high == pytest.approx(0.0)
    assert got.p == 1.0 and got.p_equivalence == pytest.approx(1 / 501)


def test_bootstrap_clear_difference() -> None:
    a, b = _pair(200, 10, 60, 130)
    got = bootstrap_accuracy(a, b, margin=0.02, n_boot=2000)
    assert got.diff == pytest.approx(50 / 400)
    assert got.p == pytest.approx(2 / 2001)  # no replicate at or below 0
    assert got.ci_low > 0.05 and got.p_equivalence is not None and got.p_equivalence > 0.5


# --- margins -------------------------------------------------------------------------------


def test_equivalence_margins_from_a_number_or_a_mapping() -> None:
    assert equivalence_margins(0.03) == dict.fromkeys(HEADLINE_METRICS, 0.03)
    assert equivalence_margins({"acc": 0.02, "valence_ccc": 0, "f1_macro": None}) == {
        "acc": 0.02,
        "valence_ccc": 0.0,
    }
    assert equivalence_margins(None) == {}


@pytest.mark.parametrize(
    ("value", "named"),
    [
        (-0.01, "report.equivalence_margin=-0.01"),
        (float("nan"), "report.equivalence_margin=nan"),
        ({"acc": float("inf")}, "report.equivalence_margin.acc=inf"),
        ({"acc": "small"}, "report.equivalence_margin.acc='small'"),
        ({"acc": True}, "report.equivalence_margin.acc=True"),
        ({"accuracy": 0.02}, "report.equivalence_margin.accuracy: not a compared metric"),
        ([0.02], "report.equivalence_margin=[0.02]"),
    ],
)
def test_bad_margins_name_the_key(value: Any, named: str) -> None:
    with pytest.raises(ConfigError) as err:
        equivalence_margins(value, "report.equivalence_margin")
    assert str(err.value).startswith(named) and "\n" not in str(err.value)


# --- end to end: a crafted sweep ------------------------------------------------------------

SEEDS = range(5)
BASE = [0.700, 0.712, 0.695, 0.705, 0.690]
#: arm -> per-seed accuracy gain over the base arm
ARMS = {
    "base": [0.0] * 5,
    "better": [0.050, 0.046, 0.053, 0.048, 0.051],  # clearly better
    "same": [0.002, -0.001, 0.001, -0.002, 0.000],  # equal within a tight spread
}
MARGINS = {"acc": 0.02, "balanced_acc": 0.02, "f1_macro": 0.02}


def _sweep(root: Path, margins: Any = "absent") -> Path:
    sweep = root / "multiruns" / "study"
    num = 0
    for arm, gains in ARMS.items():
        for seed, base, gain in zip(SEEDS, BASE, gains, strict=True):
            acc = base + gain
            metrics = {"test/acc": acc, "test/balanced_acc": acc - 0.02}
            metrics["test/f1_macro"] = acc - 0.05
            job = _job(sweep, num, [f"arm={arm}", f"seed={seed}"], {"arch": arm}, metrics)
            if margins != "absent":
                cfg = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
                cfg["report"] = {"equivalence_margin": margins}
                (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
            num += 1
    return sweep


def _rows(path: Path) -> tuple[list[str], dict[tuple[str, str, str], dict[str, str]]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        header = list(reader.fieldnames or [])
    return header, {(r["metric"], r["a"], r["b"]): r for r in rows}


def _holm_consistent(path: Path) -> None:
    """p_holm of the CSV is statsmodels' Holm over every p of the CSV, and empty without p."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    tested = [r for r in rows if r["p"] != ""]
    expected = multipletests([float(r["p"]) for r in tested], method="holm")[1]
    for r, adj in zip(tested, expected, strict=True):
        assert float(r["p_holm"]) == pytest.approx(adj, rel=1e-5, abs=1e-12)
    assert all(r["p_holm"] == "" for r in rows if r["p"] == "")


def test_comparisons_csv_verdicts_with_margins(tmp_path: Path) -> None:
    sweep = _sweep(tmp_path)
    report = write_sweep_report(sweep, equivalence_margin=MARGINS)
    path = report.paths["comparisons"]
    assert path == sweep / "report_comparisons.csv"
    header, rows = _rows(path)
    assert header == list(COLUMNS)
    assert ",".join(header) == "metric,a,b,n_seeds,diff,ci_low,ci_high,p,p_holm,margin,verdict"
    metrics = ("acc", "balanced_acc", "f1_macro")
    expected = {(m, "arm=base", b) for m in metrics for b in ("arm=better", "arm=same")}
    assert set(rows) == expected
    for metric in ("acc", "balanced_acc", "f1_macro"):
        better = rows[(metric, "arm=base", "arm=better")]
        assert better["verdict"] == "better" and better["n_seeds"] == "5"
        assert float(better["diff"]) == pytest.approx(np.mean(ARMS["better"]), abs=1e-6)
        ref = stats.ttest_rel([b + g for b, g in zip(BASE, ARMS["better"], strict=True)], BASE)
        assert float(better["p"]) == pytest.approx(ref.pvalue, rel=1e-5)
        ci = ref.confidence_interval()
        assert float(better["ci_low"]) == pytest.approx(ci.low, rel=1e-5)
        assert float(better["ci_high"]) == pytest.approx(ci.high, rel=1e-5)
        same = rows[(metric, "arm=base", "arm=same")]
        assert same["verdict"] == "equivalent" and float(same["margin"]) == 0.02
        assert float(same["p_holm"]) > 0.05
    _holm_consistent(path)
    md = (sweep / "report.md").read_text()
    assert "## Comparisons" in md and "Holm-corrected over all 6 tests" in md
    assert "`inconclusive` means no difference was detected, not that" in md
    assert "**equivalent**" in md and "**better**" in md
    assert len(report.comparisons.rows) == 6


def test_without_a_margin_equal_arms_are_inconclusive(tmp_path: Path) -> None:
    sweep = _sweep(tmp_path)
    write_sweep_report(sweep, equivalence_margin={"acc": 0.02})  # only acc has a margin
    _, rows = _rows(sweep / "report_comparisons.csv")
    assert rows[("acc", "arm=base", "arm=same")]["verdict"] == "equivalent"
    for metric in ("balanced_acc", "f1_macro"):
        same = rows[(metric, "arm=base", "arm=same")]
        assert same["verdict"] == "inconclusive" and same["margin"] == ""
        assert rows[(metric, "arm=base", "arm=better")]["verdict"] == "better"
    write_sweep_report(sweep, equivalence_margin={})
    _, rows = _rows(sweep / "report_comparisons.csv")
    assert rows[("acc", "arm=base", "arm=same")]["verdict"] == "inconclusive"


def test_a_margin_too_tight_is_inconclusive(tmp_path: Path) -> None:
    sweep = _sweep(tmp_path)
    write_sweep_report(sweep, equivalence_margin=0.001)
    _, rows = _rows(sweep / "report_comparisons.csv")
    assert rows[("acc", "arm=base", "arm=same")]["verdict"] == "inconclusive"


def test_chosen_pairs_and_worse(tmp_path: Path) -> None:
    sweep = _sweep(tmp_path)
    write_sweep_report(sweep, pairs=["arm=better vs arm=same", ["arm=base", "arm=nope"]])
    _, rows = _rows(sweep / "report_comparisons.csv")
    assert set(rows) == {(m, "arm=better", "arm=same") for m in ("acc", "balanced_acc", "f1_macro")}
    acc = rows[("acc", "arm=better", "arm=same")]
    assert acc["verdict"] == "worse" and float(acc["diff"]) < 0
    assert "not compared: pairs: no group matched 'arm=nope'" in (sweep / "report.md").read_text()


def test_one_shared_seed_has_no_p(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    _job(sweep, 0, ["arm=a", "seed=0"], {"arch": "a"}, {"test/acc": 0.6})
    _job(sweep, 1, ["arm=a", "seed=1"], {"arch": "a"}, {"test/acc": 0.61})
    _job(sweep, 2, ["arm=b", "seed=1"], {"arch": "b"}, {"test/acc": 0.7})
    write_sweep_report(sweep, equivalence_margin=0.5)
    _, rows = _rows(sweep / "report_comparisons.csv")
    assert set(rows) == {("acc", "arm=a", "arm=b")}
    row = rows[("acc", "arm=a", "arm=b")]
    assert row["n_seeds"] == "1" and float(row["diff"]) == pytest.approx(0.09)
    assert row["p"] == row["p_holm"] == row["ci_low"] == "" and row["verdict"] == "inconclusive"


def test_fersuite_report_takes_margins_recorded_or_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fersuite.cli.report import main

    sweep = _sweep(tmp_path, margins=MARGINS)
    assert main([f"sweeps={sweep}"]) == 0  # the margins the jobs ran with
    _, rows = _rows(sweep / "report_comparisons.csv")
    assert rows[("acc", "arm=base", "arm=same")]["verdict"] == "equivalent"
    assert main([f"sweeps={sweep}", "equivalence_margin=0"]) == 0
    _, rows = _rows(sweep / "report_comparisons.csv")
    assert rows[("acc", "arm=base", "arm=same")]["verdict"] == "inconclusive"
    assert main([f"sweeps={sweep}", "equivalence_margin={acc: 0.03}"]) == 0
    _, rows = _rows(sweep / "report_comparisons.csv")
    assert rows[("acc", "arm=base", "arm=same")]["margin"] == "0.03"
    assert rows[("f1_macro", "arm=base", "arm=same")]["verdict"] == "inconclusive"
    capsys.readouterr()
    for args, named in [
        (["equivalence_margin=-1"], "equivalence_margin=-1"),
        (["equivalence_margin.acc=oops"], "equivalence_margin.acc='oops'"),
    ]:
        assert main([f"sweeps={sweep}", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"fersuite-report: error: {named}"), err


def test_fersuite_report_names_a_bad_recorded_margin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fersuite.cli.report import main

    sweep = _sweep(tmp_path, margins={"acc": -0.02})
    assert main([f"sweeps={sweep}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "config.yaml: report.equivalence_margin.acc=-0.02" in err and "\n" not in err


def _multirun_cfg(sweep: Path, margins: Any) -> Any:
    from hydra.types import RunMode

    return OmegaConf.create(
        {
            "hydra": {"mode": RunMode.MULTIRUN, "sweep": {"dir": str(sweep)}},
            "report": {"equivalence_margin": margins},
        }
    )


def test_callback_reads_the_margins_from_the_job_config(tmp_path: Path) -> None:
    sweep = _sweep(tmp_path)  # the jobs recorded none: the callback's config decides
    SweepReportCallback().on_multirun_end(_multirun_cfg(sweep, MARGINS))
    _, rows = _rows(sweep / "report_comparisons.csv")
    assert rows[("acc", "arm=base", "arm=same")]["verdict"] == "equivalent"
    SweepReportCallback().on_job_end(_multirun_cfg(sweep, None), job_return=None)
    _, rows = _rows(sweep / "report_comparisons.csv")
    assert rows[("acc", "arm=base", "arm=same")]["verdict"] == "inconclusive"


def test_callback_bad_margin(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sweep = _sweep(tmp_path)
    cfg = _multirun_cfg(sweep, {**MARGINS, "f1_macro": -0.02})
    cb = SweepReportCallback()
    with pytest.raises(ConfigError, match=r"^report\.equivalence_margin\.f1_macro=-0\.02"):
        cb.on_multirun_start(cfg)
    with caplog.at_level(logging.ERROR, logger="fersuite.report"):
        cb.on_multirun_end(cfg)
    assert "report.equivalence_margin.f1_macro=-0.02" in caplog.text
    _, rows = _rows(sweep / "report_comparisons.csv")  # written, without margins
    assert rows[("acc", "arm=base", "arm=same")]["verdict"] == "inconclusive"


# --- per-sample statistics on one shared test set ------------------------------------------

CLASSES = ("neutral", "happy", "sad")
N_SAMPLES = 300


def _write_predictions(path: Path, index: np.ndarray, target: np.ndarray, pred: np.ndarray) -> None:
    """predictions_test.csv in its public format (one-hot probabilities, no VA)."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["index", "target", "pred", *(f"p_{c}" for c in CLASSES),
                    "valence", "arousal", "valence_target", "arousal_target"])  # fmt: skip
        for i, t, p in zip(index, target, pred, strict=True):
            w.writerow([int(i), int(t), int(p), *(int(p == k) for k in range(3)), "", "", "", ""])


def _prediction_sweep(root: Path, shuffle: bool = True) -> tuple[Path, dict[str, np.ndarray]]:
    """Arms base / better / same, 3 seeds, one test set; returns the per-arm correctness."""
    sweep = root / "pred_sweep"
    target = np.random.default_rng(0).integers(0, 3, N_SAMPLES)
    correct: dict[str, list[np.ndarray]] = {arm: [] for arm in ARMS}
    num = 0
    for arm in ARMS:
        for seed in range(3):
            rng = np.random.default_rng(100 + seed)
            base = rng.random(N_SAMPLES) < 0.7
            u = np.random.default_rng(200 + seed + 10 * num).random(N_SAMPLES)
            if arm == "better":  # fixes 60% of base's errors, breaks 3% of its right answers
                right = np.where(base, u >= 0.03, u < 0.6)
            elif arm == "same":  # swaps a few answers both ways
                right = np.where(base, u >= 0.02, u < 0.05)
            else:
                right = base
            pred = np.where(right, target, (target + 1) % 3)
            correct[arm].append(right)
            job = _job(sweep, num, [f"arm={arm}", f"seed={seed}"], {"arch": arm},
                       {"test/acc": float(right.mean())})  # fmt: skip
            order = np.random.default_rng(num).permutation(N_SAMPLES) if shuffle else slice(None)
            idx = np.arange(N_SAMPLES)
            _write_predictions(job / "predictions_test.csv", idx[order], target[order], pred[order])
            num += 1
    return sweep, {arm: np.stack(c) for arm, c in correct.items()}


def test_per_sample_rows_bootstrap_and_mcnemar(tmp_path: Path) -> None:
    sweep, correct = _prediction_sweep(tmp_path)
    write_sweep_report(sweep, equivalence_margin={"acc": 0.05})
    path = sweep / "report_comparisons.csv"
    header, rows = _rows(path)
    assert header == list(COLUMNS)
    metrics = {m for m, a, b in rows if b == "arm=better"}
    assert metrics == {"acc", "acc_bootstrap", "acc_mcnemar_seed0", "acc_mcnemar_seed1",
                       "acc_mcnemar_seed2"}  # fmt: skip
    boot = rows[("acc_bootstrap", "arm=base", "arm=better")]
    gain = (correct["better"].astype(float) - correct["base"]).mean()
    assert boot["n_seeds"] == "3" and float(boot["diff"]) == pytest.approx(gain, abs=1e-6)
    assert float(boot["ci_low"]) < gain < float(boot["ci_high"]) and float(boot["ci_low"]) > 0
    assert boot["verdict"] == "better" and boot["margin"] == "0.05"
    for seed in range(3):
        row = rows[(f"acc_mcnemar_seed{seed}", "arm=base", "arm=better")]
        a, b = correct["base"][seed], correct["better"][seed]
        ref = stats.binomtest(int((b & ~a).sum()), int((a ^ b).sum()), 0.5).pvalue
        assert float(row["p"]) == pytest.approx(ref, rel=1e-5)
        assert row["n_seeds"] == "1" and row["margin"] == "" and row["ci_low"] == ""
        assert float(row["diff"]) == pytest.approx(b.mean() - a.mean(), abs=1e-6)
        assert row["verdict"] == "better"
    same = rows[("acc_bootstrap", "arm=base", "arm=same")]
    assert same["verdict"] == "equivalent" and float(same["p_holm"]) > 0.05
    # every p of the report, bootstrap and McNemar included, is one Holm family
    _holm_consistent(path)
    md = (sweep / "report.md").read_text()
    assert "acc_bootstrap" in md and "acc_mcnemar_seed0" in md


def test_per_sample_rows_need_one_test_set(tmp_path: Path) -> None:
    sweep, _ = _prediction_sweep(tmp_path)
    # one job of the "same" arm scored another test set: its targets differ
    job = sweep / "7"
    lines = (job / "predictions_test.csv").read_text().splitlines()
    cells = lines[1].split(",")
    cells[1] = str((int(cells[1]) + 1) % 3)
    (job / "predictions_test.csv").write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]))
    (sweep / "1" / "predictions_test.csv").unlink()  # one base job wrote none
    write_sweep_report(sweep)
    _, rows = _rows(sweep / "report_comparisons.csv")
    assert {m for m, _, _ in rows} == {"acc"}
    md = (sweep / "report.md").read_text()
    assert "per-sample accuracy tests of arm=better vs arm=base skipped: 1 shared-seed job" in md
    assert "per-sample accuracy tests of arm=same vs arm=base skipped" in md


def test_unreadable_predictions_are_a_note(tmp_path: Path) -> None:
    sweep, _ = _prediction_sweep(tmp_path)
    (sweep / "4" / "predictions_test.csv").write_text("index,target\n0,1\n")
    write_sweep_report(sweep)
    md = (sweep / "report.md").read_text()
    assert "per-sample accuracy tests of arm=better vs arm=base skipped: " in md
    _, rows = _rows(sweep / "report_comparisons.csv")
    assert ("acc_bootstrap", "arm=base", "arm=same") in rows


# --- cross-dataset test sets (fersuite-train datasets=[...]) -------------------------------

#: arm -> per-seed accuracy gain over the base arm on the cross-dataset test set synthetic_b
CROSS_GAINS = {
    "base": [0.0] * 5,
    "better": [-0.081, -0.079, -0.084, -0.080, -0.077],  # better at home, worse elsewhere
    "same": [0.001, -0.002, 0.000, 0.002, -0.001],
}
CROSS_BASE = [0.410, 0.432, 0.405, 0.420, 0.398]


def _cross_sweep(root: Path, data: dict[str, str], cross: dict[str, tuple[str, ...]]) -> Path:
    """Arms of ARMS with their ``data=`` override (absent: the default) and, for the arms in
    ``cross``, ``cross/<dataset>/{acc,f1_macro}`` figures on those test sets."""
    sweep = root / "cross_sweep"
    num = 0
    for arm, gains in ARMS.items():
        extra = [f"data={data[arm]}"] if arm in data else []
        for seed, base, gain in zip(SEEDS, BASE, gains, strict=True):
            metrics = {"test/acc": base + gain, "test/f1_macro": base + gain - 0.05}
            for k, ds in enumerate(cross.get(arm, ())):
                acc = CROSS_BASE[seed] + CROSS_GAINS[arm][seed] + 0.1 * k
                metrics[f"cross/{ds}/acc"] = acc
                metrics[f"cross/{ds}/f1_macro"] = acc - 0.03
            metrics["cross/0/synthetic/acc"] = 0.5  # a fersuite-eval matrix key: not compared
            job = _job(sweep, num, [f"arm={arm}", *extra, f"seed={seed}"], {"arch": arm}, metrics)
            _write_predictions(
                job / "predictions_test.csv",
                np.arange(4),
                np.array([0, 1, 2, 0]),
                np.array([0, 1, 2, seed % 3]),
            )
            num += 1
    return sweep


def _seed_values(gains: list[float], base: list[float]) -> list[float]:
    return [b + g for b, g in zip(base, gains, strict=True)]


def test_cross_dataset_rows_join_the_holm_family(tmp_path: Path) -> None:
    both = ("synthetic", "synthetic_b")
    # "same" ran only synthetic_b: base vs same has no synthetic/* rows
    cross = {"base": both, "better": both, "same": ("synthetic_b",)}
    sweep = _cross_sweep(tmp_path, {}, cross)
    report = write_sweep_report(sweep, equivalence_margin=MARGINS)
    path = report.paths["comparisons"]
    _, rows = _rows(path)
    vs_better = [m for m, a, b in rows if (a, b) == ("arm=base", "arm=better")]
    assert set(vs_better) == {
        "acc", "f1_macro", "synthetic/acc", "synthetic/f1_macro", "synthetic_b/acc",
        "synthetic_b/f1_macro", "acc_bootstrap", *(f"acc_mcnemar_seed{s}" for s in SEEDS),
    }  # fmt: skip
    vs_same = {m for m, a, b in rows if (a, b) == ("arm=base", "arm=same")}
    assert "synthetic_b/acc" in vs_same and not any(m.startswith("synthetic/") for m in vs_same)
    assert not any(m.startswith("0/") for m, _, _ in rows)
    # synthetic_b is the second test set of base and better (+0.1), the first of same
    row = rows[("synthetic_b/acc", "arm=base", "arm=better")]
    base_b = [v + 0.1 for v in CROSS_BASE]
    better_b = _seed_values(CROSS_GAINS["better"], base_b)
    ref = stats.ttest_rel(better_b, base_b)
    assert float(row["diff"]) == pytest.approx(np.mean(CROSS_GAINS["better"]), abs=1e-9)
    assert float(row["p"]) == pytest.approx(ref.pvalue, rel=1e-5)
    assert row["n_seeds"] == "5" and row["margin"] == "0.02"  # the margin of acc
    assert row["verdict"] == "worse"
    assert rows[("acc", "arm=base", "arm=better")]["verdict"] == "better"
    assert rows[("synthetic_b/f1_macro", "arm=base", "arm=better")]["margin"] == "0.02"
    # base vs same on synthetic_b: another test set for one arm (+0.1): a clear difference
    same_b = rows[("synthetic_b/acc", "arm=base", "arm=same")]
    expected = np.mean(_seed_values(CROSS_GAINS["same"], CROSS_BASE)) - np.mean(base_b)
    assert float(same_b["diff"]) == pytest.approx(expected, abs=1e-9)
    # every p of the report, the cross rows included, is one Holm family
    _holm_consistent(path)
    md = (sweep / "report.md").read_text()
    assert f"Holm-corrected over all {report.comparisons.n_tests} tests" in md
    assert "`<dataset>/<metric>`: the metric on that cross-dataset test set" in md
    assert "synthetic_b/acc" in md


def test_arms_trained_on_different_data_are_compared_on_the_cross_sets_only(
    tmp_path: Path,
) -> None:
    both = ("synthetic", "synthetic_b")
    # base: the default data; better: data=synthetic_b; same: data=synthetic_b, no cross sets
    data = {"better": "synthetic_b", "same": "synthetic_b"}
    sweep = _cross_sweep(tmp_path, data, {"base": both, "better": both})
    report = write_sweep_report(sweep, equivalence_margin=MARGINS)
    _, rows = _rows(report.paths["comparisons"])
    base_b, base_s, same_s = "arm=base", "arm=better data=synthetic_b", "arm=same data=synthetic_b"
    assert {a for _, a, _ in rows} == {base_b}
    # no test/* row and no per-sample row: they were tested on different test sets
    cross_rows = {"synthetic/acc", "synthetic/f1_macro", "synthetic_b/acc", "synthetic_b/f1_macro"}
    assert {m for m, _, b in rows if b == base_s} == cross_rows
    assert not any(b == same_s for _, _, b in rows)
    row = rows[("synthetic/acc", base_b, base_s)]
    assert float(row["diff"]) == pytest.approx(np.mean(CROSS_GAINS["better"]), abs=1e-9)
    _holm_consistent(report.paths["comparisons"])
    notes = report.comparisons.notes
    assert (
        f"{base_s} vs {base_b}: trained and tested on different data (data=synthetic_b vs "
        "data=(default)): test/* not compared; compared on the cross-dataset test sets only "
        "(synthetic, synthetic_b)"
    ) in notes
    (missing,) = [n for n in notes if same_s in n]
    assert missing.startswith(f"not compared: {same_s} vs {base_b}: trained and tested on")
    assert "no cross-dataset test set both ran" in missing
    md = (sweep / "report.md").read_text()
    assert "compared on the cross-dataset test sets only" in md


def test_arms_on_the_same_named_data_keep_their_test_rows(tmp_path: Path) -> None:
    data = {arm: "synthetic_b" for arm in ARMS}
    sweep = _cross_sweep(tmp_path, data, {})
    report = write_sweep_report(sweep, equivalence_margin=MARGINS)
    _, rows = _rows(report.paths["comparisons"])
    assert ("acc", "arm=base", "arm=better") in rows  # data=synthetic_b is common to all
    assert ("acc_bootstrap", "arm=base", "arm=better") in rows
    assert not any("different data" in n for n in report.comparisons.notes)
