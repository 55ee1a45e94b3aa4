"""The configs have one source, the top-level ``conf/``: a checkout (editable install) reads it
there, and a regular install finds the copy the wheel carries as ``fersuite/conf``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fersuite import config
from fersuite.errors import ConfigError
from tests.conftest import REPO

#: Every app that composes a Hydra config, and the config it composes.
APP_CONFIGS = ("train", "eval", "data_app", "export", "profile")

#: One interpreter for what needs no console script: composes every app's config, then runs
#: ``python -m fersuite.cli.train --cfg job`` as ``-m`` does (runpy, ``__main__``) and writes
#: what it printed to the file ``argv[1]``.
_COMPOSE_ALL = """
import contextlib, io, runpy, sys
from hydra import compose, initialize_config_dir
import fersuite
from fersuite.config import CONFIG_DIR
print("PACKAGE", fersuite.__file__)
print("CONFIG_DIR", CONFIG_DIR)
with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
    for name in sys.argv[2:]:
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
job_out, sys.argv = sys.argv[1], [sys.argv[0], "--cfg", "job"]
out = io.StringIO()
try:
    with contextlib.redirect_stdout(out):
        runpy.run_module("fersuite.cli.train", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    assert exc.code in (0, None), exc.code
with open(job_out, "w") as fh:
    fh.write(out.getvalue())
"""


def _files(root: Path, prefix: str = "") -> set[str]:
    """Files under ``root`` (no caches), as ``prefix`` + their POSIX path relative to it."""
    return {
        prefix + p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def _shipped_files() -> set[str]:
    """What the wheel must hold under ``fersuite/``: the package's code and data, and conf/."""
    return (
        _files(REPO / "src" / "fersuite", "fersuite/")
        | _files(REPO / "src" / "hydra_plugins", "hydra_plugins/")
        | _files(REPO / "conf", "fersuite/conf/")
    )


def test_the_checkout_reads_the_one_top_level_conf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FERSUITE_CONFIG_DIR", raising=False)
    assert Path(config._config_dir()) == REPO / "conf"
    assert (REPO / "conf" / "train.yaml").is_file()
    assert not (REPO / "src" / "fersuite" / "conf").exists()  # no second copy to drift


def _layout(root: Path, *, package_conf: bool, top_conf: bool) -> Path:
    """A fake ``<root>/src/fersuite/config.py``, with the conf dirs asked for; its path."""
    module = root / "src" / "fersuite" / "config.py"
    module.parent.mkdir(parents=True)
    module.touch()
    if package_conf:
        (module.parent / "conf").mkdir()
    if top_conf:
        (root / "conf").mkdir()
    return module


@pytest.mark.parametrize(
    ("package_conf", "top_conf", "expected"),
    [
        (True, False, "src/fersuite/conf"),  # an installed wheel
        (False, True, "conf"),  # a checkout / editable install
        (True, True, "src/fersuite/conf"),  # the package's own copy comes first
    ],
)
def test_config_dir_search_order(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    package_conf: bool,
    top_conf: bool,
    expected: str,
) -> None:
    module = _layout(tmp_path, package_conf=package_conf, top_conf=top_conf)
    monkeypatch.setattr(config, "__file__", str(module))
    monkeypatch.delenv("FERSUITE_CONFIG_DIR", raising=False)
    assert Path(config._config_dir()) == (tmp_path / expected).resolve()
    # FERSUITE_CONFIG_DIR wins over both.
    monkeypatch.setenv("FERSUITE_CONFIG_DIR", str(tmp_path / "mine"))
    assert Path(config._config_dir()) == (tmp_path / "mine").resolve()


def test_config_dir_missing_everywhere_is_one_line_naming_both_places(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    module = _layout(tmp_path, package_conf=False, top_conf=False)
    monkeypatch.setattr(config, "__file__", str(module))
    monkeypatch.delenv("FERSUITE_CONFIG_DIR", raising=False)
    with pytest.raises(ConfigError) as err:
        config._config_dir()
    message = str(err.value)
    assert "\n" not in message
    root = tmp_path.resolve()
    assert str(root / "src" / "fersuite" / "conf") in message
    assert str(root / "conf") in message
    assert "FERSUITE_CONFIG_DIR" in message


@pytest.mark.smoke
@pytest.mark.subprocess
def test_wheel_install_composes_every_app_config_from_another_directory(tmp_path: Path) -> None:
    # Build from a copy, so the checkout gets no build/ or egg-info litter.
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, project / name)
    for name in ("src", "conf"):
        shutil.copytree(
            REPO / name,
            project / name,
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

    # The wheel holds every file of the package (code, any data the apps read) and the
    # top-level conf/ as fersuite/conf, and nothing else of the checkout (tests, experiments).
    shipped = _shipped_files()
    assert "fersuite/conf/train.yaml" in shipped
    assert "fersuite/conf/hydra/launcher/local_parallel.yaml" in shipped
    with zipfile.ZipFile(wheel) as whl:
        in_wheel = {n for n in whl.namelist() if not n.startswith("fersuite-0.1.0.dist-info/")}
    assert in_wheel == shipped
    assert (
        _files(site / "fersuite", "fersuite/") | _files(site / "hydra_plugins", "hydra_plugins/")
        == shipped
    )

    # From another directory, with only the installed copy importable.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env.update(PYTHONPATH=str(site), HF_HUB_OFFLINE="1", WANDB_MODE="disabled")

    def run(*cmd: str) -> str:
        res = subprocess.run(
            cmd,
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
        return res.stdout

    job_out = tmp_path / "job.yaml"
    out = run(sys.executable, "-c", _COMPOSE_ALL, str(job_out), *APP_CONFIGS)
    job = job_out.read_text()  # python -m fersuite.cli.train --cfg job
    assert "_target_: fersuite.models.registry.create_model" in job
    assert "task:\n  name: supervised" in job and "trainer:" in job
    # The console script the wheel installs (pip --target puts it in bin/) composes the same job.
    assert run(str(site / "bin" / "fersuite-train"), "--cfg", "job") == job

    assert f"PACKAGE {site / 'fersuite' / '__init__.py'}" in out
    assert f"CONFIG_DIR {site / 'fersuite' / 'conf'}" in out
    for name in APP_CONFIGS:
        assert f"COMPOSED {name} " in out
    assert "LAUNCHER hydra_plugins.hydra_joblib_launcher" in out
    assert "SEARCH val/" in out
    assert not any(elsewhere.iterdir())  # --cfg job writes nothing
