"""``fersuite-eval``: a checkpoint tested on any dataset, the same figures as its alias
``fersuite-train train=false ckpt_path=…`` and the ``test/*`` keys of a training run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from fersuite.config import CONFIG_DIR
from tests._helpers.apps import run_app
from tests._helpers.eval_run import eval_run
from tests.data.fixtures import write_fer2013

#: The test split of the run (EVAL_RUN: data.test_size=40; its seed and difficulty are the
#: checkpoint's data, which an evaluation applies these overrides on top of).
SMALL_SYNTHETIC = [
    "data.train_size=32",
    "data.val_size=16",
    "data.test_size=40",
    "data.num_workers=0",
]


def _compose(name: str, overrides: list[str], out: Path) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        cfg.paths.cache_dir = str(out.parent / "cache")
        cfg.hydra.runtime.output_dir = str(out)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


@pytest.fixture(scope="module")
def trained(trained_run) -> tuple[Path, dict[str, float]]:  # type: ignore[no-untyped-def]
    """One epoch of the smallest CNN on synthetic faces, the shared run of EVAL_RUN
    (tests/_helpers/eval_run.py): (best checkpoint, its metrics.json)."""
    return eval_run(trained_run)


def _eval_both(ckpt: Path, data: list[str], tmp: Path) -> tuple[dict, dict]:
    from fersuite.evaluation import evaluate
    from fersuite.training.run import train

    common = [*data, f"ckpt_path={ckpt}", "logger=none"]
    via_eval = evaluate(_compose("eval", common, tmp / "eval"))
    alias = ["train=false", *common]  # the model is the checkpoint's (model= is refused)
    via_alias = train(_compose("train", alias, tmp / "alias"))
    GlobalHydra.instance().clear()
    return via_eval, via_alias


def _test_keys(metrics: dict) -> set[str]:
    return {k for k in metrics if k.startswith("test/")}


def _tests(metrics: dict) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k.startswith("test/")}


@pytest.mark.smoke
def test_eval_on_synthetic_matches_the_training_run_and_the_alias(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ckpt, train_metrics = trained
    via_eval, via_alias = _eval_both(ckpt, SMALL_SYNTHETIC, tmp_path)
    assert _test_keys(via_eval) == _test_keys(train_metrics)  # the keys of a training run
    assert _tests(via_eval) == pytest.approx(_tests(via_alias), abs=1e-6)
    # the same checkpoint on the same test split as the run's own test
    assert via_eval["test/acc"] == pytest.approx(train_metrics["test/acc"], abs=1e-6)
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["test/acc"] == pytest.approx(via_eval["test/acc"], abs=1e-9)
    info = json.loads((tmp_path / "eval" / "run_info.json").read_text())
    assert info["config"]["model"]["arch"] == "lightweight_cnn"
    assert info["evaluated"] == str(ckpt)


@pytest.mark.smoke
def test_eval_on_another_dataset_format_matches_the_alias(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ckpt, _ = trained
    fer = write_fer2013(tmp_path / "fer", n_per_split=10)
    data = ["data=fer2013", f"data.root={fer.root}", "data.num_workers=0"]
    via_eval, via_alias = _eval_both(ckpt, data, tmp_path)
    assert "test/acc" in via_eval and "test/valence_ccc" not in via_eval  # FER2013: no VA
    assert _tests(via_eval) == pytest.approx(_tests(via_alias), abs=1e-6)


def _app(*args: str, cwd: Path, subprocess_: bool = False) -> subprocess.CompletedProcess[str]:
    """``python -m fersuite.cli.eval args...`` in-process, or the console script fersuite-eval
    in a subprocess (``subprocess_``)."""
    if not subprocess_:
        return run_app("fersuite-eval", list(args), cwd=cwd, module_entry=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [str(Path(sys.executable).parent / "fersuite-eval"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


@pytest.mark.smoke
@pytest.mark.subprocess
def test_the_eval_app_writes_metrics_and_answers_bad_input(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ckpt, train_metrics = trained
    out = tmp_path / "run"
    res = _app(
        f"ckpt_path={ckpt}",
        *SMALL_SYNTHETIC,
        f"hydra.run.dir={out}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "~callbacks.reports",  # plots that no assertion reads
        cwd=tmp_path,
        subprocess_=True,  # a fresh process: each log line once whatever was imported first
    )
    assert res.returncode == 0, res.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test/acc"] == pytest.approx(train_metrics["test/acc"], abs=1e-6)
    # every log line once (Lightning's own console handler used to print each a second time)
    both = res.stdout + res.stderr
    assert both.count("Seed set to") == 1 and both.count("GPU available") == 1, both[-3000:]
    assert (out / "eval.log").read_text().count("GPU available") == 1
    bad = _app(f"ckpt_path={tmp_path / 'nope.ckpt'}", f"hydra.run.dir={out}", cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == (
        f"fersuite-eval: error: ckpt_path={tmp_path / 'nope.ckpt'}: no such checkpoint file "
        "(expected a .ckpt)"
    )
