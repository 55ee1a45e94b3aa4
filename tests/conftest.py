"""Shared fixtures: offline environment, composed configs, tiny run settings."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from fersuite.config import CONFIG_DIR
from tests._helpers.autograd import start_autograd_on_cpu

#: Threads per test process: the cores shared out between the pytest-xdist workers (2 workers on
#: 2 cores: 1 each). Torch's default, one thread per core in every worker, oversubscribes the CPU
#: and made the suite ~1.6x slower here. Child processes (console scripts) inherit it.
#: A value the user set (`OMP_NUM_THREADS=4 make test`) is kept. It is recorded by the first
#: process that imports this file: the pytest-xdist controller imports it too, before it starts
#: the workers, and they would otherwise inherit the controller's own count (all the cores) as
#: if the user had set it.
THREADS = max(
    1, (os.cpu_count() or 1) // max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
)
os.environ.setdefault("FERSUITE_TESTS_USER_THREADS", os.environ.get("OMP_NUM_THREADS", ""))
os.environ["OMP_NUM_THREADS"] = os.environ["FERSUITE_TESTS_USER_THREADS"] or str(THREADS)
os.environ["MKL_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"]
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
#: Before any test exports a model: the forked training runs of a worker that has run an export
#: test can still train (tests/_helpers/autograd.py).
start_autograd_on_cpu()

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

REPO = Path(__file__).resolve().parents[1]

#: Overrides that make a training run take seconds on 2 CPU cores. The run report's figures are
#: not drawn (callbacks.reports.plots=false; drawing them was a tenth to a third of such a run):
#: the tests that check them turn them on, and the default config's runs draw them.
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
    "callbacks.reports.plots=false",
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
        OMP_NUM_THREADS=os.environ["OMP_NUM_THREADS"],
    )
    return env


#: Weights of the markers of long tests (pyproject's markers). A file is collected before the
#: files of lower weight, by the heaviest of its tests, so that the two pytest-xdist workers of
#: `make test` (one file at a time, --dist loadfile) start the long files early and finish on
#: the short ones, instead of one worker running a long file alone at the end.
WEIGHTS = {"long": 3, "ddp": 2, "subprocess": 1, "smoke": 1}


def _weight(item: pytest.Item) -> float:
    """The heaviest marker's weight; ``long(minutes)`` adds the minutes it takes."""
    weights = [
        WEIGHTS.get(m.name, 0) + (float(m.args[0]) if m.name == "long" and m.args else 0.0)
        for m in item.iter_markers()
    ]
    return max(weights, default=0.0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    weight: dict[str, float] = {}
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        weight[path] = max(weight.get(path, 0), _weight(item))
    items.sort(key=lambda item: -weight[item.nodeid.split("::", 1)[0]])


# Session-scoped artifacts (built once per worker), registered here for every test file.
from tests._helpers.artifacts import (  # noqa: E402
    exported_checkpoint,
    fake_checkpoint,
    resume_run,
    trained_run,
)

__all__ = ["exported_checkpoint", "fake_checkpoint", "resume_run", "trained_run"]
