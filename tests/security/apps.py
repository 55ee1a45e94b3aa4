"""Checking that nothing outside a folder changed; calling a console script in-process
(tests/_helpers/apps.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


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
