"""A regular (non-editable) install finds its configs: they ship inside the package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import fersuite
from fersuite import config
from tests.conftest import REPO

#: Every app that composes a Hydra config, and the config it composes.
APP_CONFIGS = ("train", "eval", "data_app", "export", "profile")

_COMPOSE_ALL = """
import sys
from hydra import compose, initialize_config_dir
import fersuite
from fersuite.config import CONFIG_DIR
print("PACKAGE", fersuite.__file__)
print("CONFIG_DIR", CONFIG_DIR)
with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
    for name in sys.argv[1:]:
        cfg = compose(config_name=name, return_hydra_config=True)
        print("COMPOSED", name, len(cfg))
    # nested groups (hydra/launcher), presets and searches come from the installed tree too
    cfg = compose(
        config_name="train",
        overrides=["hydra/launcher=local_parallel", "experiment=kd_synthetic"],
        return_hydra_config=True,
    )
    print("LAUNCHER", cfg.hydra.launcher._target_)
    cfg = compose(config_name="train", overrides=["hparams_search=mit_fer_optuna"])
    print("SEARCH", cfg.optimized_metric)
"""


def _package_files(root: Path) -> set[str]:
    """Files of the ``fersuite`` package under ``root`` (no caches)."""
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def test_config_dir_is_the_packages_own_and_the_env_override_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("FERSUITE_CONFIG_DIR", raising=False)
    package_conf = Path(fersuite.__file__).resolve().parent / "conf"
    assert Path(config._config_dir()) == package_conf
    assert (package_conf / "train.yaml").is_file()
    monkeypatch.setenv("FERSUITE_CONFIG_DIR", str(tmp_path))
    assert Path(config._config_dir()) == tmp_path.resolve()


@pytest.mark.smoke
@pytest.mark.subprocess
def test_wheel_install_composes_every_app_config_from_another_directory(tmp_path: Path) -> None:
    # Build from a copy, so the checkout gets no build/ or egg-info litter.
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, project / name)
    shutil.copytree(
        REPO / "src",
        project / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"),
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FERSUITE_CONFIG_DIR")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INDEX="1")
    pip = [sys.executable, "-m", "pip"]
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    for args in (
        ["wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", wheels, project],
        ["install", "--no-deps", "--no-index", "-q", "--target", site],
    ):
        if args[0] == "install":
            (wheel,) = wheels.glob("fersuite-*.whl")
            args.append(wheel)
        res = subprocess.run(
            [*pip, *map(str, args)], env=env, capture_output=True, text=True, timeout=300
        )
        assert res.returncode == 0, res.stderr[-3000:]

    # The wheel holds every file of the package (code, configs, any data the apps read).
    assert _package_files(site / "fersuite") == _package_files(REPO / "src" / "fersuite")

    # From another directory, with only the installed copy importable.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env.update(PYTHONPATH=str(site), HF_HUB_OFFLINE="1", WANDB_MODE="disabled")

    def run(*args: str) -> str:
        res = subprocess.run(
            [sys.executable, *args],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
        return res.stdout

    job = run("-m", "fersuite.cli.train", "--cfg", "job")
    assert "_target_: fersuite.models.registry.create_model" in job
    assert "task:\n  name: supervised" in job and "trainer:" in job

    out = run("-c", _COMPOSE_ALL, *APP_CONFIGS)
    assert f"PACKAGE {site / 'fersuite' / '__init__.py'}" in out
    assert f"CONFIG_DIR {site / 'fersuite' / 'conf'}" in out
    for name in APP_CONFIGS:
        assert f"COMPOSED {name} " in out
    assert "LAUNCHER hydra_plugins.hydra_joblib_launcher" in out
    assert "SEARCH val/" in out
    assert not any(elsewhere.iterdir())  # --cfg job writes nothing
