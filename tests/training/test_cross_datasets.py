"""``fersuite-train datasets=[...]``: after its test, a training run tests the same checkpoint on
each named test set (cross_dataset.csv/.png in the run dir, cross/<dataset>/<metric> in
metrics.json); a bad name is refused before anything is trained; a run that was not tested says
that nothing was cross-evaluated; a resume may change the test sets."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path
from typing import Any

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from fersuite.cli.train import main as train_main
from fersuite.errors import ConfigError
from fersuite.reporting.cross_dataset import COLUMNS, METRICS
from fersuite.runs import setup
from fersuite.runs.resume import RUN_INFO, check_config
from tests._helpers.apps import call_app
from tests.conftest import TINY, compose_train
from tests.reporting.helpers import assert_valid_png

#: The smallest model on tiny data (one training step, no profiling); data.test_size applies
#: to each test set too.
FAST = [
    *TINY,
    "data.train_size=16",
    "data.val_size=16",
    "data.batch_size=16",
    "data.test_size=40",
    "model=lightweight_cnn",
    "model.width_mult=0.25",
    "model.expansion_channels=32",
    "~callbacks.efficiency",
    "logger=csv",
    "callbacks.progress_bar=null",
]


def _train(args: list[str], tmp: Path, monkeypatch, capsys):  # type: ignore[no-untyped-def]
    return call_app(train_main, "fersuite-train", [*FAST, *args], tmp, monkeypatch, capsys)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_a_run_tests_its_checkpoint_on_each_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    summaries: list[dict[str, Any]] = []
    monkeypatch.setattr(setup, "update_wandb_summary", lambda m: summaries.append(dict(m)))
    run = tmp_path / "run"
    # the cells' reports (per_class_test.csv) are their evaluation config's (conf/eval.yaml),
    # not the run's: the run's own test writes none (plots that no assertion reads)
    args = ["datasets=[synthetic,synthetic_b]", "~callbacks.reports", f"hydra.run.dir={run}"]
    res = _train(args, tmp_path, monkeypatch, capsys)
    assert res.status == 0, res.err[-3000:]
    (best,) = sorted((run / "checkpoints").glob("best-*.ckpt"))
    rows = _rows(run / "cross_dataset.csv")
    assert list(rows[0]) == list(COLUMNS)
    assert [(r["checkpoint"], r["dataset"]) for r in rows] == [
        (str(best), "synthetic"),
        (str(best), "synthetic_b"),
    ]
    assert all(r["note"] == "" for r in rows)
    assert_valid_png(run / "cross_dataset.png")
    metrics = json.loads((run / "metrics.json").read_text())
    for row in rows:
        ds = row["dataset"]
        cell = run / "cells" / ds
        # n: the images the cell tested, as its per-class report counts them
        per_class = _rows(cell / "per_class_test.csv")
        assert int(row["n"]) == sum(int(r["support"]) for r in per_class) > 0
        cell_metrics = json.loads((cell / "metrics.json").read_text())
        for k in METRICS:
            if row[k] == "":
                assert f"cross/{ds}/{k}" not in metrics and f"test/{k}" not in cell_metrics
            else:
                assert metrics[f"cross/{ds}/{k}"] == pytest.approx(float(row[k]), abs=1e-12)
                assert metrics[f"cross/{ds}/{k}"] == pytest.approx(cell_metrics[f"test/{k}"])
    # synthetic (with VA) has every figure; synthetic_b (no VA) has no CCC
    assert {k for k in metrics if k.startswith("cross/")} == {
        *(f"cross/synthetic/{k}" for k in METRICS),
        *(f"cross/synthetic_b/{k}" for k in ("acc", "balanced_acc", "f1_macro")),
    }
    # the run's own data: the same checkpoint on the same test set as test/*
    for k in METRICS:
        assert metrics[f"cross/synthetic/{k}"] == pytest.approx(metrics[f"test/{k}"], abs=1e-6)
    assert int(rows[0]["n"]) == 40
    # the run's records are its own: run_info.json and one W&B summary (the training run's)
    info = json.loads((run / RUN_INFO).read_text())
    assert info["config"]["datasets"] == ["synthetic", "synthetic_b"]
    assert info["config"]["task_name"] == "train"
    assert len(summaries) == 1
    figures = {k: v for k, v in metrics.items() if k.startswith(("cross/", "test/"))}
    assert {k: summaries[0].get(k) for k in figures} == pytest.approx(figures)
    assert "cross-dataset matrix: " in res.out


@pytest.mark.parametrize(
    ("datasets", "match"),
    [
        ("[synthetic,nope]", "datasets: nope is not a data config (names: "),
        ("[synthetic,synthetic]", "a name is given twice"),
        ("synthetic", "datasets=synthetic; expected a list"),
        # fer2013 has no data.train_size (a TINY override): the test set cannot be composed
        ("[fer2013]", "datasets: fer2013 with "),
    ],
)
def test_a_bad_dataset_is_refused_before_training(
    datasets: str,
    match: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = tmp_path / "run"
    res = _train([f"datasets={datasets}", f"hydra.run.dir={run}"], tmp_path, monkeypatch, capsys)
    assert res.status == 2, res.err[-3000:]
    assert len(res.error_lines) == 1, res.err
    assert match in res.error_lines[0]
    assert not (run / "checkpoints").exists() and not (run / "run_info.json").exists()


def test_an_untested_run_says_nothing_was_cross_evaluated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    args = ["test=false", "datasets=[synthetic_b]", f"hydra.run.dir={run}"]
    res = _train(args, tmp_path, monkeypatch, capsys)
    assert res.status == 0, res.err[-3000:]
    assert "datasets=[synthetic_b]: nothing was cross-evaluated (test=false" in res.out
    assert not (run / "cross_dataset.csv").exists() and not (run / "cells").exists()
    metrics = json.loads((run / "metrics.json").read_text())
    assert "val/acc_best" in metrics and not any(k.startswith("cross/") for k in metrics)


def _with(cfg: DictConfig, *values: str) -> DictConfig:
    """A copy of ``cfg`` with the value overrides ``values``, each set to the value Hydra's
    override parser gives it (as composing with them would: they name no config group)."""
    cfg = copy.deepcopy(cfg)
    for override in OverridesParser.create().parse_overrides(list(values)):
        OmegaConf.update(cfg, override.key_or_group, override.value(), merge=False)
    return cfg


def test_a_resume_may_change_the_datasets(tmp_path: Path) -> None:
    composed = compose_train(FAST, tmp_path)  # datasets=null
    with open_dict(composed):
        del composed["hydra"]  # as the run records its config
    saved = _with(composed, "datasets=[synthetic]")
    run = tmp_path / "killed"
    run.mkdir()
    config = OmegaConf.to_container(saved, resolve=True)
    (run / RUN_INFO).write_text(json.dumps({"config": config}))
    resumed = _with(composed, "datasets=[synthetic_b,synthetic]")
    assert check_config(resumed, run) == ({}, False)
    assert check_config(composed, run) == ({}, False)  # datasets=null
    # a key that is compared is still refused: the check looks at the configs
    changed = _with(composed, "datasets=[synthetic_b]", "optimizer.lr=0.5")
    with pytest.raises(ConfigError, match=r"optimizer\.lr: "):
        check_config(changed, run)
