"""A folder that cannot be written or a full disk is one line; a killed write leaves nothing
that the next start keeps."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from fersuite.apps import run_app
from fersuite.cli.train import main as train_main
from fersuite.utils.io import atomic_write, remove_stale_tmp
from tests._helpers.apps import call_app
from tests.conftest import TINY
from tests.security.apps import Victim


@pytest.mark.parametrize(
    ("code", "status", "needs"),
    [
        (errno.EACCES, 2, "write access"),
        (errno.EROFS, 2, "write access"),
        (errno.ENOSPC, 1, "free space"),
        (errno.EDQUOT, 1, "free space"),
    ],
)
def test_storage_errors_are_one_line_naming_the_path(
    code: int, status: int, needs: str, capsys: pytest.CaptureFixture[str]
) -> None:
    def app() -> None:
        raise OSError(code, os.strerror(code), "/runs/r1/metrics.json")

    with pytest.raises(SystemExit) as exit_:
        run_app("train", app)
    err = capsys.readouterr().err
    assert exit_.value.code == status
    lines = [ln for ln in err.splitlines() if ln.startswith("fersuite-train")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "cannot write /runs/r1/metrics.json" in lines[0] and needs in lines[0]


def test_a_full_disk_during_a_real_run_is_one_line_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import fersuite.utils.io as io

    def full(*args: object, **kwargs: object) -> tuple[int, str]:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(kwargs.get("dir", "?")))

    monkeypatch.setattr(io.tempfile, "mkstemp", full)
    args = [*TINY, "logger=none", "model=lightweight_cnn", f"hydra.run.dir={tmp_path / 'run'}"]
    res = call_app(train_main, "fersuite-train", args, tmp_path, monkeypatch, capsys)
    assert res.status == 1, res.err
    assert len(res.error_lines) == 1 and "Traceback" not in res.err, res.err
    assert "No space left on device" in res.error_lines[0]
    assert f"cannot write {tmp_path}" in res.error_lines[0]  # the folder that filled up


def test_stale_tmp_files_are_removed_inside_the_folder_only(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    stale = [run / ".metrics.json.k2j3h4.tmp", run / "checkpoints" / ".last.ckpt.a8b9c0.tmp"]
    for p in stale:
        p.write_bytes(b"half")
    keep = [run / "notes.tmp", run / "checkpoints" / "last.ckpt", run / ".hidden"]
    for p in keep:
        p.write_bytes(b"mine")
    victim = Victim.make(tmp_path / "elsewhere")
    outside = victim.folder / ".data.bin.zz11yy.tmp"
    outside.write_bytes(b"not the run's")
    (run / "link").symlink_to(victim.folder, target_is_directory=True)
    before = victim.snapshot()

    removed = remove_stale_tmp(run)

    assert sorted(removed) == sorted(stale)
    assert not any(p.exists() for p in stale)
    assert all(p.read_bytes() == b"mine" for p in keep)
    victim.assert_untouched(before)
    assert outside.exists()


def test_a_killed_write_leaves_the_old_file_and_the_next_start_removes_its_tmp(
    tmp_path: Path,
) -> None:
    target = tmp_path / "metrics.json"
    target.write_text("old\n")

    class Killed(BaseException):
        """Stands for SIGKILL: nothing after it runs (the finally of atomic_path neither)."""

    def write(fh: object) -> None:
        fh.write("half")  # type: ignore[attr-defined]
        raise Killed

    real_unlink = Path.unlink
    try:
        Path.unlink = lambda self, missing_ok=False: None  # type: ignore[method-assign]
        with pytest.raises(Killed):
            atomic_write(target, write)
    finally:
        Path.unlink = real_unlink  # type: ignore[method-assign]
    leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert target.read_text() == "old\n" and len(leftovers) == 1
    assert remove_stale_tmp(tmp_path) == leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
