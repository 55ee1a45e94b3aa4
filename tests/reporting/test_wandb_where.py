"""An offline W&B run is reported as saved offline, with the command that uploads it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from fersuite.loggers import finish_wandb


def test_offline_run_says_where_it_is_and_how_to_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import wandb

    monkeypatch.setenv("WANDB_SILENT", "true")
    wandb.init(project="fersuite-test", dir=str(tmp_path), mode="offline")
    with caplog.at_level(logging.INFO, logger="fersuite.loggers"):
        finish_wandb()
    (line,) = [r.getMessage() for r in caplog.records if "W&B" in r.getMessage()]
    run_dirs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 1
    assert f"saved offline in {run_dirs[0]} (not uploaded)" in line
    assert line.endswith(f"wandb sync {run_dirs[0]}")
    assert wandb.run is None
