"""Calling a console script in-process, and checking that nothing outside a folder changed."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hydra.core.global_hydra import GlobalHydra


@dataclass(frozen=True)
class AppResult:
    status: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        """The lines of stderr that an app wrote as its answer (``fersuite-<app>: ...``)."""
        return [ln for ln in self.err.splitlines() if ln.startswith("fersuite-")]


def call_app(
    main: Callable[[], Any],
    prog: str,
    args: list[str],
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> AppResult:
    """Run the console script ``main`` as ``prog args...`` with its runs under ``root``;
    returns its exit status and what it printed."""
    monkeypatch.setenv("FERSUITE_ROOT", str(root))
    monkeypatch.setenv("FERSUITE_CACHE", str(root / "cache"))
    monkeypatch.chdir(root)
    monkeypatch.setattr(sys, "argv", [prog, *args])
    capsys.readouterr()
    GlobalHydra.instance().clear()
    status = 0
    try:
        result = main()
        if isinstance(result, int) and not isinstance(result, bool):
            status = result
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        GlobalHydra.instance().clear()
    captured = capsys.readouterr()
    return AppResult(status, captured.out, captured.err)


@dataclass(frozen=True)
class Victim:
    """A file and a folder outside the run that no app may write, create or delete."""

    file: Path
    folder: Path

    @classmethod
    def make(cls, where: Path) -> Victim:
        where.mkdir(parents=True, exist_ok=True)
        file = where / "victim.txt"
        file.write_text("precious\n")
        os.utime(file, (1_000_000_000, 1_000_000_000))
        folder = where / "victim_dir"
        folder.mkdir(exist_ok=True)
        (folder / "keep.txt").write_text("keep\n")
        return cls(file, folder)

    def snapshot(self) -> tuple[bytes, int, list[str]]:
        parent = sorted(p.name for p in self.file.parent.iterdir())
        listing = sorted(str(p.relative_to(self.folder)) for p in self.folder.rglob("*"))
        return (self.file.read_bytes(), self.file.stat().st_mtime_ns, parent + listing)

    def assert_untouched(self, before: tuple[bytes, int, list[str]]) -> None:
        assert self.snapshot() == before, "a file or folder outside the run was changed"
