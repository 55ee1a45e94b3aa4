"""Shared fixtures: offline environment, composed configs, tiny run settings."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from fersuite.config import CONFIG_DIR

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

REPO = Path(__file__).resolve().parents[1]

#: Overrides that make a training run take seconds on 2 CPU cores.
TINY = [
    "trainer.max_epochs=1",
    "data.train_size=96",
    "data.val_size=48",
    "data.test_size=48",
    "data.batch_size=32",
    "data.num_workers=0",
    "callbacks.efficiency.latency_runs=3",
    "callbacks.efficiency.latency_warmup=1",
    "callbacks.efficiency.throughput_batch=4",
    "callbacks.efficiency.throughput_runs=1",
    "callbacks.efficiency.warmup_batches=1",
]


def compose_train(overrides: list[str], tmp_path: Path) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.paths.log_dir = str(tmp_path / "logs")
        cfg.paths.cache_dir = str(tmp_path / "cache")
        cfg.hydra.runtime.output_dir = str(tmp_path / "run")
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture
def cfg_factory(tmp_path: Path) -> Iterator[object]:
    def make(overrides: list[str] | None = None) -> DictConfig:
        return compose_train(list(overrides or []), tmp_path)

    yield make
    GlobalHydra.instance().clear()


def run_env(tmp_path: Path) -> dict[str, str]:
    """Environment for console-script subprocesses: offline, outputs under tmp_path."""
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        FERSUITE_ROOT=str(tmp_path),
        FERSUITE_CACHE=str(tmp_path / "cache"),
        OMP_NUM_THREADS="2",
    )
    return env


#: The files that take minutes (subprocess training runs, DDP, exports), longest first. They
#: are collected first, so that the two pytest-xdist workers of `make test` (one file at a time,
#: --dist loadfile) start them early and finish on the short files, instead of one worker
#: running a long file alone at the end.
LONG_FILES = (
    "tests/reliability/test_kill_resume.py",
    "tests/cli/test_sweeps.py",
    "tests/export/test_export.py",
    "tests/data/test_apps.py",
    "tests/cli/test_train_smoke.py",
    "tests/distill/test_smoke.py",
    "tests/cli/test_apps.py",
    "tests/reliability/test_ddp_resume.py",
    "tests/deploy/test_quantized_export.py",
    "tests/deploy/test_executorch.py",
    "tests/cli/test_eval_exported.py",
    "tests/cli/test_help.py",
    "tests/conf/test_studies.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))
