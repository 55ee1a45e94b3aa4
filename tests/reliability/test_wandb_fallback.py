"""W&B that cannot start never stops training: CSV logs and a one-line warning instead."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from tests._helpers.fork import fork_app
from tests.conftest import REPO, TINY, run_env


def test_wandb_init_failure_falls_back_to_csv(cfg_factory, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    import wandb

    from fersuite.runs.builders import build_loggers

    def broken_init(*args: object, **kwargs: object) -> None:
        raise OSError("No space left on device\nwhile writing wandb/run-x/files")

    monkeypatch.setattr(wandb, "init", broken_init)
    cfg = cfg_factory(["logger.wandb.mode=online"])
    with caplog.at_level(logging.WARNING, logger="fersuite.train"):
        loggers = build_loggers(cfg)
    assert [type(lg).__name__ for lg in loggers] == ["CSVLogger"]
    warnings = [r.getMessage() for r in caplog.records if "could not start" in r.getMessage()]
    assert warnings == [
        "logger wandb could not start (No space left on device); continuing without it"
    ]


@pytest.mark.smoke
@pytest.mark.subprocess
def test_online_wandb_without_network_trains_with_csv(tmp_path: Path) -> None:
    # a process of its own (a forked child, tests/_helpers/fork.py): online W&B (its service
    # process and settings are process-wide)
    env = run_env(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO)])  # this checkout
    env.update(
        WANDB_MODE="online",
        WANDB_API_KEY="0" * 40,  # invalid key
        WANDB_BASE_URL="http://127.0.0.1:9",  # nothing listens there: no network
        WANDB_INIT_TIMEOUT="2",  # seconds W&B waits for its server before it gives up
    )
    res = fork_app(
        "fersuite-train",
        [
            *TINY,
            "model.name=test_resnet",
            "model.input_size=32",
            "~callbacks.efficiency",
            "~callbacks.reports",
        ],
        cwd=tmp_path,
        env=env,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    (run,) = sorted((tmp_path / "logs" / "train" / "runs").glob("*"))
    assert "test/acc" in json.loads((run / "metrics.json").read_text())
    assert (run / "csv" / "metrics.csv").is_file()
    output = (res.stdout + res.stderr).splitlines()
    warning = [line for line in output if "logger wandb could not start" in line]
    assert len(warning) == 1 and "continuing without it" in warning[0]
    assert not (run / "wandb_run_id.txt").exists()


def test_preset_tags_reach_the_wandb_run(cfg_factory, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import wandb

    from fersuite.runs.builders import build_loggers

    seen: dict[str, object] = {}

    def fake_init(*args: object, **kwargs: object) -> None:
        seen.update(kwargs)
        raise OSError("stop here")

    monkeypatch.setattr(wandb, "init", fake_init)
    cfg = cfg_factory(["logger.wandb.mode=offline", "tags=[paper,timm]"])
    build_loggers(cfg)
    assert seen["tags"] == ["timm", "synthetic", "ce_va", "paper"]
