"""Evaluation answers the question asked: the checkpoint's own data by default, no model
override silently ignored, no untrained model tested, no missing key called a bug."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fersuite.cli.eval import main as eval_main
from fersuite.cli.export import main as export_main
from fersuite.cli.train import main as train_main
from tests._helpers.apps import call_app
from tests._helpers.eval_run import RUN_DATA, eval_run
from tests.conftest import TINY

#: The run's data (RUN_DATA): data.seed=3, data.test_size=40, data.difficulty=0.6.
_ = RUN_DATA


@pytest.fixture(scope="module")
def trained(trained_run) -> tuple[Path, dict[str, float]]:  # type: ignore[no-untyped-def]
    """The shared run of EVAL_RUN (trained on RUN_DATA): (best checkpoint, metrics.json)."""
    return eval_run(trained_run)


def _tests(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k.startswith("test/") and "latency" not in k}


def test_eval_defaults_to_the_checkpoints_own_data_and_says_so(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    ckpt, run_metrics = trained
    args = [f"ckpt_path={ckpt}", "logger=none", f"hydra.run.dir={tmp_path / 'eval'}"]
    res = call_app(eval_main, "fersuite-eval", args, tmp_path, monkeypatch, capsys)
    assert res.status == 0, res.err
    first = res.out.strip().splitlines()[0]
    assert first.startswith(f"evaluating {ckpt} on its training data: data=synthetic")
    assert "seed=3" in first and "test_size=40" in first
    got = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert got["test/acc"] == pytest.approx(run_metrics["test/acc"], abs=1e-6)
    assert _tests(got).keys() <= _tests(run_metrics).keys() | {"test/loss"}


def test_data_overrides_apply_on_top_of_the_checkpoints_data(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    ckpt, _ = trained
    # only run_info.json is read: no reports (plots, most of an evaluation's time)
    args = [f"ckpt_path={ckpt}", "logger=none", "data.test_size=24", "~callbacks.reports"]
    args.append(f"hydra.run.dir={tmp_path / 'eval'}")
    res = call_app(eval_main, "fersuite-eval", args, tmp_path, monkeypatch, capsys)
    assert res.status == 0, res.err
    info = json.loads((tmp_path / "eval" / "run_info.json").read_text())
    assert info["config"]["data"]["test_size"] == 24  # the override
    assert info["config"]["data"]["seed"] == 3  # the checkpoint's
    assert info["config"]["data"]["difficulty"] == 0.6


@pytest.mark.parametrize(
    ("app", "args", "match"),
    [
        ("train", ["model=timm"], "model=timm given with ckpt_path="),
        ("train", ["model=lightweight_cnn", "model.width_mult=1.0"], "defines the model"),
        ("eval", ["+model=timm"], "+model=timm given with ckpt_path="),
        ("eval", ["data.image_size=64"], "data.image_size=64 contradicts"),
        ("train", ["data.in_chans=3"], "data.in_chans=3 contradicts"),
        ("eval", ["data.std=[0.2]"], "data.std=[0.2] contradicts"),
    ],
)
def test_what_the_checkpoint_decides_cannot_be_overridden(
    app: str,
    args: list[str],
    match: str,
    trained,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ckpt, _ = trained
    main, extra = (eval_main, []) if app == "eval" else (train_main, ["train=false"])
    full = [*extra, f"ckpt_path={ckpt}", "logger=none", *args, f"hydra.run.dir={tmp_path / 'r'}"]
    res = call_app(main, f"fersuite-{app}", full, tmp_path, monkeypatch, capsys)
    assert res.status == 2, res.err
    assert len(res.error_lines) == 1 and match in res.error_lines[0], res.err
    assert not (tmp_path / "r" / "metrics.json").exists()


def test_train_false_without_a_checkpoint_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train=false", *TINY, "logger=none", f"hydra.run.dir={tmp_path / 'r'}"]
    res = call_app(train_main, "fersuite-train", args, tmp_path, monkeypatch, capsys)
    assert res.status == 2, res.err
    assert len(res.error_lines) == 1 and "fersuite-eval ckpt_path=" in res.error_lines[0]
    assert not (tmp_path / "r" / "metrics.json").exists()


@pytest.mark.parametrize(("main", "app"), [(eval_main, "eval"), (export_main, "export")])
def test_a_missing_ckpt_path_is_one_line_not_a_bug(
    main,  # type: ignore[no-untyped-def]
    app: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    res = call_app(main, f"fersuite-{app}", [], tmp_path, monkeypatch, capsys)
    assert res.status == 2, res.err
    assert res.error_lines == [res.error_lines[0]] and "ckpt_path is not set" in res.error_lines[0]
    assert "Traceback" not in res.err and "bug" not in res.err
