"""Sweeps and scale: presets, Optuna search, launchers, reproducibility (DDP on 2 CPU processes:
tests/reliability/test_ddp_resume.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from fersuite.config import CONFIG_DIR
from tests._helpers.apps import run_app
from tests.conftest import TINY, run_env

pytestmark = pytest.mark.long(0.7)

#: Smaller still than TINY (after it on the command line, so these win): what these tests check
#: (trials, failures, determinism) does not need more data.
DATA = ["data.train_size=32", "data.val_size=16", "data.test_size=16", "data.batch_size=16"]
#: The smallest model, where the model is not what is tested (a search's preset sets its own).
SMALL = [*DATA, "model=lightweight_cnn", "model.width_mult=0.25", "model.expansion_channels=32"]


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """fersuite-train in-process."""
    flags = [a for a in args if a.startswith("--")]
    rest = [a for a in args if not a.startswith("--")]
    argv = [*flags, *TINY, "logger=csv", *rest]
    return run_app("fersuite-train", argv, cwd=tmp_path, env=run_env(tmp_path))


def _compose_hydra(overrides: list[str]) -> object:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose(config_name="train", overrides=overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


@pytest.mark.parametrize("launcher", ["slurm", "joblib", "local_parallel"])
def test_launcher_configs_compose(launcher: str) -> None:
    cfg = _compose_hydra([f"hydra/launcher={launcher}"])
    target = cfg.hydra.launcher._target_  # type: ignore[attr-defined]
    assert ("Slurm" in target) if launcher == "slurm" else ("Joblib" in target)
    if launcher == "slurm":
        launcher_cfg = cfg.hydra.launcher  # type: ignore[attr-defined]
        assert launcher_cfg.array_parallelism == 16 and launcher_cfg.gpus_per_node == 1


def test_optuna_search_space_composes() -> None:
    cfg = _compose_hydra(["hparams_search=mit_fer_optuna"])
    assert cfg.model.arch == "mit_fer"  # type: ignore[attr-defined]
    params = cfg.hydra.sweeper.params  # type: ignore[attr-defined]
    assert set(params) == {
        "optimizer.lr",
        "optimizer.weight_decay",
        "model.drop_path_rate",
        "model.fusion_dim",
    }


@pytest.mark.smoke
def test_optuna_runs_two_trials(tmp_path: Path) -> None:
    res = _run(
        tmp_path,
        "hparams_search=mit_fer_optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=1",
        "callbacks.efficiency=null",
        "callbacks.reports=null",
        "test=false",
        *DATA,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    sweeps = list((tmp_path / "logs" / "train" / "multiruns").glob("*"))
    assert len(sweeps) == 1
    jobs = [p for p in sweeps[0].iterdir() if p.is_dir() and p.name.isdigit()]
    assert len(jobs) == 2
    best = yaml_load(sweeps[0] / "optimization_results.yaml")
    assert 0.0 <= best["best_value"] <= 1.0


def yaml_load(path: Path) -> dict[str, object]:
    import yaml

    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def _metrics(run: Path) -> dict[str, float]:
    return json.loads((run / "metrics.json").read_text())  # type: ignore[no-any-return]


@pytest.mark.smoke
def test_same_seed_same_metrics(tmp_path: Path) -> None:
    results = []
    for name in ("a", "b"):
        d = tmp_path / name
        d.mkdir()
        res = _run(d, "seed=7", "trainer.deterministic=true", "callbacks.efficiency=null", *SMALL)
        assert res.returncode == 0, res.stderr[-3000:]
        (run,) = (d / "logs" / "train" / "runs").glob("*")
        results.append(_metrics(run))
        info = json.loads((run / "run_info.json").read_text())
        assert info["config"]["seed"] == 7 and info["packages"]["torch"]
    keys = [k for k in results[0] if k.startswith(("test/", "val/"))]
    assert keys
    assert {k: results[0][k] for k in keys} == {k: results[1][k] for k in keys}


@pytest.mark.smoke
def test_optuna_search_survives_a_failed_trial(tmp_path: Path) -> None:
    # hparams_search sets hydra.mode=MULTIRUN in config (no --multirun on the command line):
    # a trial drawing the invalid lr must fail alone, recorded, and the search go on.
    res = _run(
        tmp_path,
        "hparams_search=mit_fer_optuna",
        "hydra.sweeper.params={optimizer.lr:'choice(-0.01,0.001)'}",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=1",
        "callbacks.efficiency=null",
        "callbacks.reports=null",
        "test=false",
        *DATA,
    )
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert len(jobs) == 4, res.stderr[-3000:]
    failed = [j for j in jobs if (j / "error.txt").is_file()]
    ok = [j for j in jobs if (j / "metrics.json").is_file()]
    assert failed and ok and len(failed) + len(ok) == 4, res.stderr[-3000:]
    for job in failed:
        assert "optimizer.lr=-0.01" in (job / ".hydra" / "overrides.yaml").read_text()
        assert "expected a learning rate > 0" in (job / "error.txt").read_text()
    best = yaml_load(sweep / "optimization_results.yaml")
    assert best["best_params"]["optimizer.lr"] == 0.001
    rows = (sweep / "report.md").read_text()
    assert f"{len(ok)} of 4 jobs finished, {len(failed)} failed." in rows
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last == f"fersuite-train: error: {len(failed)} of 4 jobs failed (see {sweep}/report.md)"
