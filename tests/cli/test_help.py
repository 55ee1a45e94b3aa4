"""``--help`` of every app: a short usage that names the app, its config groups with their
options (as in ``conf/``), the keys people change most (each one a key of the app's config)
and where the full config is (``--cfg job``)."""

from __future__ import annotations

import functools
import importlib
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from fersuite.config import CONFIG_DIR
from tests._helpers.apps import call_app

CONF = Path(CONFIG_DIR)

HYDRA_APPS = [
    # (module, app, config name, keys its help must list)
    ("fersuite.cli.train", "fersuite-train", "train", ["trainer.max_epochs", "optimizer.lr"]),
    ("fersuite.cli.eval", "fersuite-eval", "eval", ["ckpt_path", "tta"]),
    ("fersuite.cli.data", "fersuite-data", "data_app", ["samples_per_class", "data.root"]),
    ("fersuite.cli.profile", "fersuite-profile", "profile", ["profile.latency_runs"]),
    ("fersuite.cli.export", "fersuite-export", "export", ["export.quantize", "ckpt_path"]),
]
#: Not Hydra apps (fersuite.cli._args): every key with its default on its own line.
ARG_APPS = [
    (
        "fersuite.cli.predict",
        "fersuite-predict",
        ["ckpt_path: null", "inputs: null", "output: predictions.csv", "batch_size: 32"],
        ["optimizer:", "sweeps:"],
    ),
    (
        "fersuite.cli.report",
        "fersuite-report",
        ["sweeps: null", "out: null", "metric: test/acc", "strict: false"],
        ["optimizer:", "ckpt_path:"],
    ),
]
MAX_LINES = 60


def _section(text: str, title: str) -> list[str]:
    """The lines under ``== <title>...`` up to the next blank line or ``==`` heading."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"== {title}"))
    out = []
    for ln in lines[start + 1 :]:
        if not ln.strip() or ln.startswith("=="):
            break
        out.append(ln)
    return out


def _app_groups(config_name: str) -> set[str]:
    """The config groups in the app's defaults list (Hydra's own excluded)."""
    defaults = yaml.safe_load((CONF / f"{config_name}.yaml").read_text())["defaults"]
    groups = {next(iter(d)) for d in defaults if isinstance(d, dict)}
    return {g.removeprefix("override ") for g in groups} - {"hydra"}


def _options(group: str) -> list[str]:
    """A group's options in conf/ (``_``-prefixed files are shared parts, not options)."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_"))


@functools.cache
def _compose(config_name: str, overrides: tuple[str, ...] = ()) -> DictConfig:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose(config_name, overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


def _has_key(cfg: DictConfig, key: str) -> bool:
    """``key`` is in ``cfg``, set or not (``in`` on a DictConfig is False for ``???``)."""
    node = cfg
    *parents, last = key.split(".")
    for part in parents:
        if not isinstance(node, DictConfig) or part not in node.keys():  # noqa: SIM118
            return False
        node = node._get_node(part)
    return isinstance(node, DictConfig) and last in node.keys()  # noqa: SIM118


def _key_exists(config_name: str, key: str) -> bool:
    """``key`` is in the app's config as composed by default, or with one option of the group
    it belongs to (``data.root``: ``data=fer2013``)."""
    if _has_key(_compose(config_name), key):
        return True
    group = key.split(".")[0]
    if group not in _app_groups(config_name):
        return False
    return any(_has_key(_compose(config_name, (f"{group}={o}",)), key) for o in _options(group))


@pytest.mark.parametrize(("module", "app", "config_name", "must"), HYDRA_APPS)
def test_hydra_app_help_is_a_short_usage(
    module: str,
    app: str,
    config_name: str,
    must: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    main = importlib.import_module(module).main
    res = call_app(main, app, ["--help"], tmp_path, monkeypatch, capsys)
    assert res.status == 0, res.err[-2000:]
    text = res.out
    assert text.startswith(f"{app}: ")
    assert f"Usage: {app} " in text
    assert len(text.splitlines()) < MAX_LINES, text
    assert f"{app} --cfg job" in text
    # No config dump: the keys are listed with descriptions, not as YAML.
    assert "_target_:" not in text

    # Every group of the app, with exactly its options in conf/.
    listed = {}
    for line in _section(text, "Config groups"):
        if not line.startswith(" "):
            group, _, options = line.partition(":")
            listed[group] = sorted(o for o in options.replace(" ", "").split(",") if o)
    assert set(listed) == _app_groups(config_name)
    for group, options in listed.items():
        assert [o for o in options if not o.startswith("_")] == _options(group), group

    # Each key people change most: one line with a description, a key of this app's config.
    keys = {}
    for line in _section(text, "Keys people change most"):
        key, _, meaning = line.strip().partition(" ")
        keys[key] = meaning.strip()
    assert 5 <= len(keys) <= 15
    for key in must:
        assert key in keys, key
    for key, meaning in keys.items():
        assert meaning, f"{key} has no description"
        assert _key_exists(config_name, key), f"{app} --help lists {key}, not a key of its config"


@pytest.mark.parametrize(("module", "app", "keys", "absent"), ARG_APPS)
def test_argparse_app_help_lists_its_keys(
    module: str,
    app: str,
    keys: list[str],
    absent: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    main = importlib.import_module(module).main
    res = call_app(main, app, ["--help"], tmp_path, monkeypatch, capsys)
    assert res.status == 0, res.err[-2000:]
    assert res.out.startswith(f"{app}: ")
    assert f"Usage: {app} " in res.out
    for key in keys:
        assert f"\n{key}" in res.out or f"  {key}" in res.out, key
    for key in absent:
        assert f"\n{key}" not in res.out, key


def test_help_full_config_pointer_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What ``--help`` points to: ``--cfg job --package <group>`` prints that group."""
    from fersuite.cli.profile import main

    res = call_app(
        main,
        "fersuite-profile",
        ["--cfg", "job", "--package", "profile"],
        tmp_path,
        monkeypatch,
        capsys,
    )
    assert res.status == 0, res.err[-2000:]
    assert "latency_runs: 50" in res.out
    assert "model:" not in res.out
