"""Checkpoint writes are atomic: a failure or a kill mid-write keeps the old file intact."""

from __future__ import annotations

import os
import signal
import textwrap
from pathlib import Path

import pytest
import torch

from fersuite.utils.io import AtomicCheckpointIO
from tests._helpers.fork import fork


def _half_write_then(action: str) -> str:
    return textwrap.dedent(
        f"""
        import os, signal, torch
        real_save = torch.save

        def torn_save(obj, f, *a, **k):
            import io
            buf = io.BytesIO()
            real_save(obj, buf)
            data = buf.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            {action}
        """
    )


def test_failed_write_keeps_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(1000)}, path)
    ns: dict[str, object] = {}
    exec(_half_write_then("raise OSError('disk full')"), ns)
    monkeypatch.setattr(torch, "save", ns["torn_save"])
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(1000)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["global_step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # temp file removed


@pytest.mark.subprocess
def test_sigkill_mid_write_never_leaves_a_readable_torn_checkpoint(tmp_path: Path) -> None:
    # a process of its own, SIGKILLed mid-write: a forked child of the test process (the
    # imports are inherited, so it costs no interpreter start-up)
    ckpt_dir = tmp_path / "checkpoints"
    last = str(ckpt_dir / "last.ckpt")
    script = _half_write_then("os.kill(os.getpid(), signal.SIGKILL)") + textwrap.dedent(
        f"""
        from fersuite.utils.io import AtomicCheckpointIO
        io = AtomicCheckpointIO()
        io.save_checkpoint({{"global_step": 1, "w": torch.ones(1000)}}, {last!r})
        torch.save = torn_save
        io.save_checkpoint({{"global_step": 2, "w": torch.zeros(1000)}}, {last!r})
        """
    )
    pid = fork()
    if pid == 0:  # the child never returns into pytest
        try:
            exec(script, {})
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    ckpts = sorted(ckpt_dir.glob("*.ckpt"))
    assert [p.name for p in ckpts] == ["last.ckpt"]
    assert torch.load(ckpts[0], weights_only=True)["global_step"] == 1
    strays = [p for p in ckpt_dir.iterdir() if p.name != "last.ckpt"]
    assert strays and all(p.name.startswith(".last.ckpt.") and p.suffix == ".tmp" for p in strays)
    with pytest.raises(Exception):  # noqa: B017 - the torn temp file is indeed unreadable
        torch.load(strays[0], weights_only=True)


def test_remote_paths_use_lightning_writer(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    io.save_checkpoint({"x": torch.ones(2)}, f"file://{tmp_path / 'a.ckpt'}")
    assert torch.load(tmp_path / "a.ckpt", weights_only=True)["x"].sum() == 2
