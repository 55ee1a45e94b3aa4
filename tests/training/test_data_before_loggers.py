"""A data error is answered before any logger starts: one line, and no W&B run left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from fersuite.cli.train import main as train_main
from tests._helpers.apps import call_app
from tests.conftest import TINY


def test_a_data_error_comes_first_and_leaves_no_logger_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    empty = tmp_path / "fer2013"
    empty.mkdir()
    run = tmp_path / "run"
    args = [
        *[a for a in TINY if not a.startswith("data.")],
        "data=fer2013",
        f"data.root={empty}",
        "data.num_workers=0",
        "logger=wandb",
        f"hydra.run.dir={run}",
    ]
    res = call_app(train_main, "fersuite-train", args, tmp_path, monkeypatch, capsys)
    assert res.status == 2, res.err[-2000:]
    assert len(res.error_lines) == 1 and str(empty) in res.error_lines[0], res.err[-2000:]
    chatter = res.out + res.err
    assert "GPU available" not in chatter and "wandb" not in chatter.lower(), chatter[-2000:]
    assert not list(tmp_path.rglob("offline-run-*")) and not list(tmp_path.rglob("wandb"))
