"""Atomic file writes: a crash never leaves a half-written file that is later read as valid."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO


def _final_mode(target: Path) -> int:
    """The permissions the written file should end with: an existing file's own, else what
    ``open(path, "w")`` would give under the process umask (``mkstemp`` makes files 0600)."""
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success. The
    file keeps an existing file's permissions, else gets the umask's (as ``open`` would)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, _final_mode(target))
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def pid_alive(pid: int) -> bool:
    """True when a process ``pid`` exists on this host (owned by anyone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_atomic_tmp(path: Path) -> bool:
    """True for the name :func:`atomic_path` gives its temporary files (``.<name>.<rand>.tmp``)."""
    return path.name.startswith(".") and path.name.endswith(".tmp") and path.name.count(".") >= 3


def remove_stale_tmp(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files a killed writer left in ``folder`` (and below it): regular
    files named as :func:`atomic_path` names them, never following a symlink out of the
    folder. Call it when a run (re)starts in a folder it owns. Returns what was removed."""
    root = Path(folder)
    removed: list[Path] = []
    if not root.is_dir() or root.is_symlink():
        return removed
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in filenames:
            path = Path(dirpath, name)
            if is_atomic_tmp(path) and path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed.append(path)
        dirnames[:] = [d for d in dirnames if not Path(dirpath, d).is_symlink()]
    return removed


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[IO[Any]], None], mode: str = "w"
) -> None:
    """Open a temporary file, let ``write`` fill it, then rename it into place."""
    with atomic_path(path) as tmp, open(tmp, mode) as fh:
        write(fh)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, indent: int = 2) -> None:
    """Write ``obj`` as JSON atomically (keys sorted, NaN rejected)."""
    text = json.dumps(obj, indent=indent, sort_keys=True, allow_nan=False, default=json_default)
    atomic_write(path, lambda fh: fh.write(text + "\n"))


def json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def _make_atomic_checkpoint_io() -> type:

    class AtomicCheckpointIO(TorchCheckpointIO):
        """Lightning ``CheckpointIO`` that writes a checkpoint atomically on local disks.

        Lightning's own writer stages the file in the system temp dir and moves it into place
        without fsync; across filesystems that move is a copy, so a kill mid-copy leaves a
        truncated ``last.ckpt``. This one writes ``.<name>.<random>.tmp`` beside the target,
        fsyncs it and ``os.replace``-s it over the target: the old checkpoint stays intact
        until the new one is complete, and a leftover ``.tmp`` is never named ``*.ckpt``.
        """

        def save_checkpoint(
            self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
        ) -> None:
            target = str(path)
            if storage_options is not None or ("://" in target and not target.startswith("file:")):
                super().save_checkpoint(checkpoint, path, storage_options)  # remote: fsspec
                return

            with atomic_path(target.removeprefix("file://")) as tmp, open(tmp, "wb") as fh:
                torch.save(checkpoint, fh)

    AtomicCheckpointIO.__module__ = __name__
    return AtomicCheckpointIO


def __getattr__(name: str) -> Any:
    # ``AtomicCheckpointIO`` is built on first use so that importing this module stays light.
    if name == "AtomicCheckpointIO":
        cls = _make_atomic_checkpoint_io()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
