"""One run per run dir: ``<run dir>/.run.lock`` (pid and host) is held while a run writes there.

The lock is an ``flock`` on that file, so a run that was killed holds nothing: its lock file
is stale and the next run takes it over. Where ``flock`` is not available (some network file
systems) a lock whose pid is no longer alive on this host is stale. Locks are re-entrant
within a process (the Hydra callback and :func:`fersuite.training.train` both take the run
dir's) and the file is removed when the last holder releases it. A forked child (a DataLoader
worker) closes its copies of the lock's fds, so it never holds a killed run's lock. Only rank 0
of a DDP run locks (the other ranks write into the same dir).

:class:`RunLockCallback` (``conf/hydra/default.yaml``) takes the lock of ``hydra.run.dir`` in
``on_run_start``, before Hydra writes ``.hydra/`` there, and of the sweep dir of a multirun in
``on_multirun_start``; the job dirs of a multirun are distinct, and each job's
:func:`~fersuite.training.train` locks its own.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from fersuite.errors import RunLockedError
from fersuite.utils.io import pid_alive

__all__ = ["LOCK_NAME", "RunLockCallback", "RunLockedError", "acquire", "release", "release_all"]

log = logging.getLogger(__name__)

LOCK_NAME = ".run.lock"
#: realpath of a held lock file -> [its open fd, how many holders in this process]
_HELD: dict[str, list[int]] = {}


def _holder(fd: int) -> dict[str, Any]:
    """The pid and host recorded in an open lock file (plain data; empty when unreadable)."""
    try:
        raw = os.pread(fd, 4096, 0)
        data = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    pid, host = data.get("pid"), data.get("host")
    return {
        "pid": pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None,
        "host": host[:255] if isinstance(host, str) else None,
    }


def _refuse(run_dir: Path, path: Path, holder: dict[str, Any]) -> RunLockedError:
    who = f"pid {holder.get('pid') or '?'} on {holder.get('host') or '?'}"
    return RunLockedError(
        f"{run_dir} is in use by another run ({who}, {path}); wait for it to end or use "
        "another run dir"
    )


def _main_process() -> bool:
    """Not a DDP worker (rank > 0): those share the run dir of the rank-0 process (which
    holds the lock), started by Lightning or torchrun with these variables set."""
    for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK"):
        value = os.environ.get(var, "0").strip() or "0"
        if value != "0":
            return False
    return True


def acquire(run_dir: str | os.PathLike[str]) -> Path:
    """Lock ``run_dir`` for this process (created if needed); returns the lock file. Other
    ranks of a DDP run take no lock.

    Raises :class:`RunLockedError` (one line) when another live run holds it."""
    run_dir = Path(run_dir)
    path = run_dir / LOCK_NAME
    if not _main_process():
        return path
    run_dir.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(path)
    if key in _HELD:
        _HELD[key][1] += 1
        return path
    host = socket.gethostname()
    for _ in range(5):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise _refuse(run_dir, path, holder) from None
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                os.close(fd)
                raise
            holder = _holder(fd)  # no flock here: a live pid on this host holds it
            pid = holder.get("pid")
            if holder.get("host") == host and pid and pid != os.getpid() and pid_alive(pid):
                os.close(fd)
                raise _refuse(run_dir, path, holder) from None
        # The file may have been removed (released) between open and flock: then retry.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        old = _holder(fd)
        if old.get("pid") and old.get("pid") != os.getpid():
            log.info(
                "taking over the stale lock %s (pid %s on %s is gone)",
                path,
                old["pid"],
                old.get("host"),
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": host}).encode() + b"\n", 0)
        _HELD[key] = [fd, 1]
        return path
    raise RunLockedError(f"{path}: could not take the run dir's lock; try again")


def release(run_dir: str | os.PathLike[str]) -> None:
    """Release this process's lock of ``run_dir`` (the last holder removes the file)."""
    path = Path(run_dir) / LOCK_NAME
    key = os.path.realpath(path)
    held = _HELD.get(key)
    if held is None:
        return
    held[1] -= 1
    if held[1] > 0:
        return
    del _HELD[key]
    fd = held[0]
    try:
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            path.unlink()  # while still locked: nobody can take the file we remove
    except OSError:
        pass
    finally:
        os.close(fd)


def _forget_in_child() -> None:
    """In a forked child (a DataLoader worker): close the inherited lock fds. An ``flock``
    lives as long as any fd of its open file: a worker that outlives its killed run by the few
    seconds it takes to notice would otherwise keep the run dir locked against its resume."""
    for fd, _ in _HELD.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def release_all() -> None:
    """Release every lock this process holds (at the end of an app, however it ended)."""
    for key in list(_HELD):
        _HELD[key][1] = 1
        release(Path(key).parent)


def _acquire_or_exit(config: Any, run_dir: str) -> None:
    """Take the lock; refused: one line and exit status 2 (Hydra turns a callback's exception
    into a warning and would run the job anyway)."""
    try:
        acquire(run_dir)
    except RunLockedError as exc:
        prog = OmegaConf.select(config, "hydra.help.app_name", default=None) or "fersuite"
        print(f"{prog}: error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


class RunLockCallback(Callback):
    """Hydra callback: lock the run dir (sweep dir) before Hydra writes into it."""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        _acquire_or_exit(config, str(config.hydra.run.dir))

    def on_run_end(self, config: Any, **kwargs: Any) -> None:
        release(str(config.hydra.run.dir))

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        _acquire_or_exit(config, str(config.hydra.sweep.dir))

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        release(str(config.hydra.sweep.dir))
