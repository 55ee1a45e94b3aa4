"""Atomic writes leave files with the permissions a plain write would give."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from fersuite.utils.io import atomic_write, atomic_write_json


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_file_gets_the_umask_permissions(tmp_path: Path, umask_022: None) -> None:
    plain = tmp_path / "plain.md"
    plain.write_text("x")
    atomic_write(tmp_path / "report.md", lambda fh: fh.write("x"))
    atomic_write_json(tmp_path / "metrics.json", {"a": 1})
    assert _mode(plain) == 0o644
    assert _mode(tmp_path / "report.md") == 0o644  # mkstemp alone would leave 0600
    assert _mode(tmp_path / "metrics.json") == 0o644


def test_existing_file_keeps_its_permissions(tmp_path: Path, umask_022: None) -> None:
    path = tmp_path / "shared.csv"
    path.write_text("old")
    path.chmod(0o664)
    atomic_write(path, lambda fh: fh.write("new"))
    assert path.read_text() == "new" and _mode(path) == 0o664
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
