"""Running a console script in a forked child of the test process: a process of its own (it
can be SIGKILLed, its exit status is a real one, its loader workers and W&B service are its
own) without the ~10 s of interpreter, torch, Lightning and timm start-up of a subprocess,
which the child inherits already imported.

:func:`fork_app` answers as ``subprocess.run(..., capture_output=True, text=True)`` does for
the console script: the exit status (minus the signal number when a signal ended it), stdout
and stderr, read until every process holding them (the loader workers) has closed them.

What a fresh process would have and the forked child would not is set in the child: argv,
environment, working directory, fd 1 and 2 (pipes) and ``sys.stdout``/``sys.stderr`` on them
(with the buffering of a process writing to a pipe), logging without pytest's handlers,
warnings shown on stderr, default SIGALRM (pytest-timeout's), no exit handlers or
multiprocessing children of the test process, and Hydra's global state cleared. Torch runs
one thread in the child: an OpenMP pool started by the test process does not survive a fork.

The child never returns into pytest: it leaves with ``os._exit`` whatever happens, after the
exit handlers registered during the run (W&B's, logging's, multiprocessing's) have run. A
child that has not ended after ``timeout`` seconds is SIGKILLed with its process group (its
workers) and :class:`subprocess.TimeoutExpired` is raised, as ``subprocess.run`` would.
"""

from __future__ import annotations

import atexit
import contextlib
import faulthandler
import gc
import importlib
import logging
import os
import selectors
import signal
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tests._helpers.apps import MODULES, _status

ENCODING = "utf-8"


def fork() -> int:
    """``os.fork()`` for a test process: every object it has, garbage included, is frozen for
    the child (``gc.freeze``: the permanent generation, which no collection visits), so the
    child's collector never runs the destructor of an object the test process made (an ONNX
    Runtime session left by an earlier test destroys a condition variable that the parent's
    thread pool was waiting on: in the child, without those threads, that wait never ends).
    The parent unfreezes after the fork and collects its garbage as before. (No
    ``gc.collect()`` first: late in a suite that scan of millions of objects took seconds.)"""
    gc.freeze()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "multi-threaded, use of fork"
        pid = os.fork()
    if pid:
        gc.unfreeze()
    return pid


def fork_app(
    app: str, args: list[str], cwd: Path, env: Mapping[str, str], timeout: float = 900.0
) -> subprocess.CompletedProcess[str]:
    """``app args...`` (a console script of pyproject's [project.scripts]) run in a forked
    child, in ``cwd`` with the environment ``env``; see the module's docstring."""
    main = importlib.import_module(MODULES[app]).main  # imported here, once, not in each child
    argv = [str(Path(sys.executable).parent / app), *map(str, args)]
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()  # nothing buffered here is written again by the child
    pid = fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            os.close(out_r)
            os.close(err_r)
            code = _child(main, argv, cwd, env, out_w, err_w)
        finally:
            os._exit(code)
    os.close(out_w)
    os.close(err_w)
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)  # as the child does: no window where a kill misses its group
    out, err, status = _collect(pid, out_r, err_r, timeout, argv)
    return subprocess.CompletedProcess(argv, status, out, err)


def _child(
    main: Callable[[], Any],
    argv: list[str],
    cwd: Path,
    env: Mapping[str, str],
    out_w: int,
    err_w: int,
) -> int:
    """Set up the forked child as a fresh process, run ``main``; its exit status."""
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)  # its own process group: a timeout kills it with its workers
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.close(out_w)
    os.close(err_w)
    # a process writing to pipes: stdout block-buffered, stderr line-buffered (Python >= 3.9)
    out = open(1, "w", encoding=ENCODING, closefd=False)  # noqa: SIM115
    err = open(2, "w", encoding=ENCODING, errors="backslashreplace", closefd=False)  # noqa: SIM115
    err.reconfigure(line_buffering=True)
    code = 1
    try:
        _fresh_process(out, err)
        os.environ.clear()
        os.environ.update(env)
        # one thread: an OpenMP pool of the test process is not usable after the fork
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)
        os.chdir(cwd)
        sys.argv = list(argv)
        code = _run(main)
    except BaseException:  # noqa: BLE001 - the set-up failed: said on stderr, status 1
        with contextlib.suppress(Exception):
            traceback.print_exc(file=err)
    finally:
        with contextlib.suppress(BaseException):
            atexit._run_exitfuncs()  # W&B's, logging's (flush and close), multiprocessing's
        for stream in (sys.stdout, sys.stderr, out, err):
            with contextlib.suppress(Exception):
                stream.flush()
    return code


def _run(main: Callable[[], Any]) -> int:
    """``main()`` as the interpreter runs a console script: its exit status."""
    try:
        result = main()
    except SystemExit as exc:
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
        return _status(exc)
    except BaseException:  # noqa: BLE001 - what the interpreter would print, status 1
        traceback.print_exc()
        return 1
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def _fresh_process(out: Any, err: Any) -> None:
    """Undo, in the child, what the test process (pytest) set up that a fresh one lacks."""
    from hydra.core.global_hydra import GlobalHydra

    swap = {id(sys.stdout): out, id(sys.__stdout__): out}
    swap.update({id(sys.stderr): err, id(sys.__stderr__): err})
    sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__ = out, err, out, err
    # handlers made at import time on pytest's capture (Lightning's) write to the new streams
    for logger in [logging.root, *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and id(handler.stream) in swap:
                handler.setStream(swap[id(handler.stream)])
    logging.root.handlers.clear()  # pytest's capture handlers; a fresh process has none
    logging.root.setLevel(logging.WARNING)
    logging.disable(logging.NOTSET)
    # pytest records warnings; a process prints them on stderr
    warnings.showwarning = warnings._showwarning_orig  # type: ignore[attr-defined]
    warnings._showwarnmsg_impl = _showwarnmsg  # type: ignore[attr-defined]
    if faulthandler.is_enabled():
        faulthandler.enable(file=err)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)  # pytest-timeout's; its timer is not inherited
    # no exit handlers of the test process; those of a process's own imports, kept
    atexit._clear()
    atexit.register(logging.shutdown)
    if "multiprocessing" in sys.modules:  # as multiprocessing sets up a process it forks
        import multiprocessing.process
        import multiprocessing.util

        multiprocessing.process._children.clear()  # type: ignore[attr-defined]
        multiprocessing.util._finalizer_registry.clear()  # type: ignore[attr-defined]
        multiprocessing.util._run_after_forkers()  # type: ignore[attr-defined]
        atexit.register(multiprocessing.util._exit_function)  # type: ignore[attr-defined]
    GlobalHydra.instance().clear()


def _showwarnmsg(msg: warnings.WarningMessage) -> None:
    """The interpreter's own way of showing a warning (on stderr)."""
    file = msg.file if msg.file is not None else sys.stderr
    if file is None:
        return
    with contextlib.suppress(OSError):
        file.write(warnings._formatwarnmsg(msg))  # type: ignore[attr-defined]


def _collect(
    pid: int, out_r: int, err_r: int, timeout: float, argv: list[str]
) -> tuple[str, str, int]:
    """stdout, stderr (until every holder closed them) and the exit status of the child."""
    deadline = time.monotonic() + timeout
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    status: int | None = None

    def text(fd: int) -> str:
        data = b"".join(chunks[fd]).decode(ENCODING, errors="replace")
        return data.replace("\r\n", "\n").replace("\r", "\n")  # as text=True reads it

    try:
        with selectors.DefaultSelector() as sel:
            for fd in chunks:
                sel.register(fd, selectors.EVENT_READ)
            while sel.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise subprocess.TimeoutExpired(argv, timeout, text(out_r), text(err_r))
                for key, _ in sel.select(left):
                    data = os.read(key.fd, 1 << 16)
                    if data:
                        chunks[key.fd].append(data)
                    else:
                        sel.unregister(key.fd)
        while status is None:  # its output closed: the child has ended or is ending
            done, raw = os.waitpid(pid, os.WNOHANG)
            if done:
                status = os.waitstatus_to_exitcode(raw)
            elif time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(argv, timeout, text(out_r), text(err_r))
            else:
                time.sleep(0.01)
    finally:
        if status is None:  # timed out or interrupted: no child is left behind
            for kill in (os.killpg, os.kill):
                with contextlib.suppress(OSError):
                    kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        for fd in chunks:
            with contextlib.suppress(OSError):
                os.close(fd)
    return text(out_r), text(err_r), status
