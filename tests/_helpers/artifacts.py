"""Artifacts built once per pytest worker (session-scoped fixtures, registered in
tests/conftest.py): trained runs, checkpoints and exports that several test files use.

A session artifact is shared: a test never writes into it. A test that writes into a run dir
works on a copy (``shutil.copytree`` to its ``tmp_path``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from omegaconf import open_dict

from tests._helpers.apps import process_state
from tests.conftest import TINY, compose_train

#: TINY with 2 steps an epoch, only the callbacks that checkpoint, the CSV logger: the run
#: that the resume tests (tests/reliability/test_resume_contract.py,
#: tests/security/test_resume_state.py) copy and resume.
RESUME_RUN = [
    *TINY,
    "data.train_size=32",
    "data.val_size=16",
    "data.test_size=16",
    "data.batch_size=16",
    "~callbacks.efficiency",
    "~callbacks.reports",
    "~callbacks.progress_bar",
    "model=lightweight_cnn",
    "model.width_mult=0.25",
    "model.expansion_channels=32",
    "logger=csv",
    "trainer.log_every_n_steps=1",
    "seed=3",
]


def train_run(overrides: list[str], base: Path) -> Path:
    """A finished ``fersuite.training.train`` run of ``overrides`` in ``base/run``."""
    from fersuite.training.run import train

    # the test that first asks for a run gets back the process state it had (torch flags,
    # signal handlers, HydraConfig, log handlers), as every later test does
    with process_state():
        cfg = compose_train(overrides, base)
        with open_dict(cfg):
            del cfg["hydra"]
        train(cfg)
    return base / "run"


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[[list[str]], Path]:
    """``trained_run(overrides)``: the run dir of a finished training run of ``overrides``,
    trained once per worker for each list of overrides. Read-only: copy it to write."""
    runs: dict[tuple[str, ...], Path] = {}

    def get(overrides: list[str]) -> Path:
        key = tuple(overrides)
        if key not in runs:
            runs[key] = train_run(list(overrides), tmp_path_factory.mktemp("trained_run"))
        return runs[key]

    return get


@pytest.fixture(scope="session")
def resume_run(trained_run: Callable[[list[str]], Path]) -> Path:
    """A finished one-epoch run of :data:`RESUME_RUN` (2 steps). Read-only: copy it."""
    run = trained_run(RESUME_RUN)
    assert (run / "checkpoints" / "last.ckpt").is_file()
    return run


@pytest.fixture(scope="session")
def fake_checkpoint(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[..., Path]:
    """``fake_checkpoint(model_cfg, seed=0)``: a checkpoint in fersuite-train's format with
    random but non-trivial weights (tests/export/helpers.make_checkpoint), written once per
    worker for each (model_cfg, seed). Read-only."""
    from tests.export.helpers import make_checkpoint

    made: dict[str, Path] = {}

    def get(model_cfg: dict[str, Any], seed: int = 0) -> Path:
        key = json.dumps([model_cfg, seed], sort_keys=True)
        if key not in made:
            root = tmp_path_factory.mktemp("fake_checkpoint")
            made[key], _ = make_checkpoint(root / "m.ckpt", model_cfg, seed=seed)
        return made[key]

    return get


@pytest.fixture(scope="session")
def exported_checkpoint(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[..., Path]:
    """``exported_checkpoint(ckpt, **settings)``: the folder of ``export_checkpoint(ckpt,
    ExportSettings(**settings))`` (model file + sidecar), exported once per worker for each
    (ckpt, settings). Read-only."""
    from fersuite.deploy.exporter import ExportSettings, export_checkpoint

    made: dict[str, Path] = {}

    def get(ckpt: Path, **settings: Any) -> Path:
        key = json.dumps([str(ckpt), settings], sort_keys=True)
        if key not in made:
            out = tmp_path_factory.mktemp("exported")
            export_checkpoint(ckpt, ExportSettings(**settings), out)
            made[key] = out
        return made[key]

    return get
