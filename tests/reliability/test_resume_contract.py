"""What a resume keeps: the run's config (changes refused unless allowed), a finished run, the
CSV history; Ctrl-C names the command that resumes; one run per run dir (issue 26)."""

from __future__ import annotations

import csv
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import pytest
import torch

from fersuite.cli.train import main as train_main
from tests._helpers.apps import call_app
from tests._helpers.artifacts import RESUME_RUN
from tests._helpers.fork import fork

#: TINY with 2 steps an epoch, only the callbacks that checkpoint, the CSV logger.
RUN = RESUME_RUN
#: Set by a test: the global step at which :class:`CtrlC` raises KeyboardInterrupt.
INTERRUPT_AT: list[int] = []


class CtrlC(L.Callback):
    """Ctrl-C at a known step (acts only while ``INTERRUPT_AT`` is set)."""

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if INTERRUPT_AT and trainer.global_step == INTERRUPT_AT[0]:
            raise KeyboardInterrupt


@pytest.fixture
def trained(resume_run: Path) -> Path:
    """A finished one-epoch run (2 steps; built once per worker, copied before use)."""
    return resume_run


def _copy(trained: Path, dest: Path, finished: bool) -> Path:
    shutil.copytree(trained, dest)
    if not finished:
        (dest / "metrics.json").unlink()
    return dest


def _state(run: Path) -> list[tuple[str, bytes, int]]:
    return sorted(
        (str(p.relative_to(run)), p.read_bytes() if p.is_file() else b"", p.stat().st_mtime_ns)
        for p in run.rglob("*")
    )


def _train(args: list[str], root: Path, monkeypatch, capsys):  # type: ignore[no-untyped-def]
    root.mkdir(parents=True, exist_ok=True)
    return call_app(train_main, "fersuite-train", args, root, monkeypatch, capsys)


def _csv(run: Path) -> list[dict[str, str]]:
    with (run / "csv" / "metrics.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def _epochs_of(rows: list[dict[str, str]], column: str) -> list[int]:
    return [int(r["epoch"]) for r in rows if r.get(column)]


def _ckpt(run: Path) -> dict[str, Any]:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)  # type: ignore[no-any-return]


# -- 1. a changed config ---------------------------------------------------------------------
def test_changed_config_is_refused_in_one_line(
    trained: Path, tmp_path: Path, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    run = _copy(trained, tmp_path / "run", finished=False)
    before = _state(run)
    args = [*RUN, "trainer.max_epochs=2", "optimizer.lr=0.01", "data.batch_size=8"]
    result = _train([*args, f"resume={run}"], tmp_path / "root", monkeypatch, capsys)
    assert result.status == 2, result.err[-3000:]
    (line,) = result.error_lines
    assert "optimizer.lr: 0.002 → 0.01" in line and "data.batch_size: 16 → 8" in line, line
    assert "resume.allow_changes=[data.batch_size,optimizer.lr]" in line, line
    assert "trainer.max_epochs" not in line.split(";")[0]  # growing it is allowed
    assert _state(run) == before


def test_allowed_change_is_applied_and_recorded_and_history_kept(
    trained: Path, tmp_path: Path, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    run = _copy(trained, tmp_path / "run", finished=False)
    # a stale lock (a killed run's: no live holder) is taken over, and removed at the end
    (run / ".run.lock").write_text(json.dumps({"pid": 2**22 + 7, "host": socket.gethostname()}))
    args = [*RUN, "trainer.max_epochs=2", "optimizer.lr=0.01", "resume_allow_changes=[optimizer]"]
    result = _train([*args, f"resume={run}"], tmp_path / "root", monkeypatch, capsys)
    assert result.status == 0, result.err[-3000:]
    assert not (run / ".run.lock").exists()
    info = json.loads((run / "run_info.json").read_text())
    assert info["config"]["optimizer"]["lr"] == 0.01
    assert info["config"]["trainer"]["max_epochs"] == 2
    ckpt = _ckpt(run)
    assert ckpt["global_step"] == 4
    groups = ckpt["optimizer_states"][0]["param_groups"]
    assert {g["initial_lr"] for g in groups} == {0.01}
    assert set(ckpt["lr_schedulers"][0]["base_lrs"]) == {0.01}
    # the CSV history keeps epoch 0 (before the resume): each epoch once
    rows = _csv(run)
    assert _epochs_of(rows, "val/loss") == [0, 1]
    assert _epochs_of(rows, "train/loss_step") == [0, 0, 1, 1]


# -- 2. a finished run -----------------------------------------------------------------------
def test_finished_run_is_left_as_it_is(trained: Path, tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    run = _copy(trained, tmp_path / "run", finished=True)
    before = _state(run)
    result = _train([*RUN, f"resume={run}"], tmp_path / "root", monkeypatch, capsys)
    assert result.status == 2, result.err[-3000:]
    (line,) = result.error_lines
    assert f"{run} already finished" in line and "trainer.max_epochs=<more than 1>" in line
    assert _state(run) == before


def test_finished_run_with_longer_schedule_trains_on(
    trained: Path, tmp_path: Path, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    run = _copy(trained, tmp_path / "run", finished=True)
    result = _train(
        [*RUN, "trainer.max_epochs=2", f"resume={run}"], tmp_path / "root", monkeypatch, capsys
    )
    assert result.status == 0, result.err[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"val/loss", "val/acc_best", "test/acc"} <= set(metrics)
    assert _ckpt(run)["global_step"] == 4
    rows = _csv(run)
    assert _epochs_of(rows, "val/loss") == [0, 1]
    assert _epochs_of(rows, "test/acc") == [2]  # the first run's test row is replaced


# -- 4/5. Ctrl-C, mid-epoch, then the printed command -----------------------------------------
def test_ctrl_c_names_the_resume_command_and_history_has_each_step_once(
    tmp_path: Path, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    args = [
        *RUN,
        "trainer.max_epochs=2",
        "checkpoint.every_n_train_steps=1",
        f"+callbacks.ctrl_c._target_={__name__}.CtrlC",
    ]
    root = tmp_path / "root"
    INTERRUPT_AT[:] = [3]  # one batch into epoch 1, after the step-3 last.ckpt
    try:
        result = _train(args, root, monkeypatch, capsys)
    finally:
        INTERRUPT_AT.clear()
    assert result.status == 130, result.err[-3000:]
    (line,) = result.error_lines
    (run,) = (root / "logs" / "train" / "runs").iterdir()
    assert not (run / "metrics.json").exists() and not (run / ".run.lock").exists()
    command = line.split("interrupted; resume with: ", 1)[1]
    prog, *again = shlex.split(command)
    assert prog == "fersuite-train" and again[-1] == f"resume={run.resolve()}", line
    assert sorted(again[:-1]) == sorted(args)
    resumed = _train(again, root, monkeypatch, capsys)
    assert resumed.status == 0, resumed.err[-3000:]
    assert _ckpt(run)["global_step"] == 4
    rows = _csv(run)
    steps = [int(r["step"]) for r in rows if r.get("train/loss_step")]
    assert steps == [0, 1, 2, 3]  # the step-3 row logged before Ctrl-C is not repeated
    assert _epochs_of(rows, "val/loss") == [0, 1]


# -- 6. one run per run dir ------------------------------------------------------------------
def test_second_run_into_a_locked_run_dir_is_refused_before_writing(
    tmp_path: Path, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    run = tmp_path / "busy"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("first run\n")
    (run / "train.log").write_text("first run's log\n")
    with (run / ".run.lock").open("w") as held:  # the first run, alive: holds the flock
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write(json.dumps({"pid": 4242, "host": "elsewhere"}))
        held.flush()
        before = _state(run)
        result = _train([*RUN, f"hydra.run.dir={run}"], tmp_path / "root", monkeypatch, capsys)
        assert result.status == 2, result.err[-3000:]
        (line,) = result.error_lines
        assert f"{run} is in use by another run (pid 4242 on elsewhere" in line, line
        assert _state(run) == before


@pytest.mark.subprocess
def test_lock_is_reentrant_and_released(tmp_path: Path) -> None:
    from fersuite.runs import lock

    run = tmp_path / "run"
    path = lock.acquire(run)
    assert lock.acquire(run) == path
    held = json.loads(path.read_text())
    assert held == {"pid": os.getpid(), "host": socket.gethostname()}
    probe = subprocess.run(  # another process cannot take it
        [
            sys.executable,
            "-c",
            "import fcntl,sys; f=open(sys.argv[1]); fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)",
            str(path),
        ],
        capture_output=True,
        check=False,
    )
    assert probe.returncode != 0
    lock.release(run)
    assert path.exists()
    lock.release(run)
    assert not path.exists()


def _killed_with_a_child(run: Path) -> tuple[int, int]:
    """A run that holds its lock, forks a child that outlives it (as DataLoader workers do for
    a few seconds: they notice a dead parent only every 5 s) and is then SIGKILLed: a forked
    child of this process (a process of its own, without a subprocess's start-up). Its exit
    status and its child's pid."""
    from fersuite.runs import lock

    read, write = os.pipe()
    pid = fork()
    if pid == 0:  # the run: never returns
        try:
            os.close(read)
            lock.acquire(run)
            child = os.fork()
            if child == 0:
                os.close(write)  # the test reads the run's pipe to its end: not the child's
                time.sleep(60)
                os._exit(0)
            os.write(write, f"{child}\n".encode())
            os.kill(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(1)
    os.close(write)
    with os.fdopen(read, "rb") as out:
        said = out.read().decode()
    _, raw = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(raw), int(said.split()[0])


@pytest.mark.subprocess
def test_a_killed_runs_forked_children_do_not_hold_its_lock(tmp_path: Path) -> None:
    from fersuite.runs import lock

    run = tmp_path / "run"
    status, child = _killed_with_a_child(run)
    assert status == -signal.SIGKILL, status
    try:
        state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        assert state != "Z"  # the child lives on
        # ... and yet a resume right after the kill takes the run dir over
        assert lock.acquire(run) == run / ".run.lock"
        lock.release(run)
    finally:
        os.kill(child, signal.SIGKILL)


def test_default_run_dirs_differ_within_one_second(cfg_factory) -> None:  # type: ignore[no-untyped-def]
    from omegaconf import OmegaConf

    cfg = cfg_factory([])
    for key, where in (("hydra.run.dir", "runs"), ("hydra.sweep.dir", "multiruns")):
        value = str(OmegaConf.select(cfg, key))
        assert re.search(rf"/{where}/\d{{4}}-\d\d-\d\d_\d\d-\d\d-\d\d_\d{{6}}$", value), value


def test_resume_auto_matches_runs_that_differ_only_in_allowed_keys(tmp_path: Path) -> None:
    from fersuite.runs.resume import find_unfinished_run

    run = tmp_path / "runs" / "2026-01-01_00-00-00_000001"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- optimizer.lr=0.1\n- seed=1\n")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    now = ["seed=1", "optimizer.lr=0.01", "resume=auto", "resume_allow_changes=[optimizer.lr]"]
    assert find_unfinished_run(tmp_path / "runs", now) is None
    assert find_unfinished_run(tmp_path / "runs", now, ignore=("optimizer.lr",)) == run


def test_resume_allow_changes_is_the_command_lines_spelling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from fersuite.cli.train import command_line
    from fersuite.cli.train import main as train_main
    from tests._helpers.apps import call_app

    assert command_line(["resume=auto", "resume.allow_changes=[optimizer.lr]", "resume=x"]) == [
        "resume=auto",
        "resume_allow_changes=[optimizer.lr]",
        "resume=x",
    ]
    args = ["resume=auto", "resume.allow_changes=[optimizer.lr,data.batch_size]", "--cfg", "job"]
    res = call_app(train_main, "fersuite-train", args, tmp_path, monkeypatch, capsys)
    assert res.status == 0, res.err[-2000:]
    assert "resume_allow_changes:\n- optimizer.lr\n- data.batch_size" in res.out
