"""Calling a console script in-process (seconds faster than a subprocess: no interpreter,
torch and Lightning start-up), with what a fresh process would give it: its own argv,
environment, working directory, stdout/stderr; and the process-wide state it may change
(torch flags and threads, logging handlers, signal handlers, warnings, run locks) put back.

One subprocess test per console script (marked ``subprocess``) proves the entry point itself.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import runpy
import signal
import subprocess
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

#: Each console script's module (pyproject's [project.scripts]); its ``main`` is the script.
MODULES = {
    "fersuite-train": "fersuite.cli.train",
    "fersuite-eval": "fersuite.cli.eval",
    "fersuite-data": "fersuite.cli.data",
    "fersuite-profile": "fersuite.cli.profile",
    "fersuite-export": "fersuite.cli.export",
    "fersuite-predict": "fersuite.cli.predict",
    "fersuite-report": "fersuite.cli.report",
}


def _status(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    return exc.code if isinstance(exc.code, int) else 1


@contextlib.contextmanager
def process_state() -> Iterator[None]:
    """Put back, after the block, the process-wide state an app run may change."""
    import torch

    from fersuite.runs.lock import release_all

    env, cwd, argv = dict(os.environ), os.getcwd(), sys.argv[:]
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    # Hydra's job logging (conf/hydra/default.yaml) sets the handlers of Lightning's loggers
    loggers = {
        name: (lg.handlers[:], lg.level, lg.propagate, lg.disabled)
        for name, lg in logging.Logger.manager.loggerDict.items()
        if isinstance(lg, logging.Logger)
    }
    hydra_cfg = HydraConfig.instance().cfg  # else HydraConfig.get() gives the app's config
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    GlobalHydra.instance().clear()
    try:
        with warnings.catch_warnings():
            yield
    finally:
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = hydra_cfg
        release_all()  # as the end of the process would
        for s, handler in signals.items():
            signal.signal(s, handler)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.set_num_threads(threads)
        for h in root.handlers[:]:
            if h not in handlers:
                root.removeHandler(h)
                h.close()  # the run's log file
        for h in handlers:
            if h not in root.handlers:
                root.addHandler(h)
        root.setLevel(level)
        for name, (lg_handlers, lg_level, propagate, disabled) in loggers.items():
            lg = logging.getLogger(name)
            lg.handlers[:] = lg_handlers
            lg.setLevel(lg_level)
            lg.propagate, lg.disabled = propagate, disabled
        sys.argv[:] = argv
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)


def run_app(
    app: str,
    args: list[str],
    cwd: Path,
    env: Mapping[str, str] | None = None,
    module_entry: bool = False,
) -> subprocess.CompletedProcess[str]:
    """``app args...`` run in this process, as ``subprocess.run(..., capture_output=True,
    text=True)`` would run the console script: in ``cwd``, with the environment ``env`` (the
    current one when None); its exit status, stdout and stderr (Python-level output).

    ``module_entry``: as ``python -m <app's module>`` (the module run as ``__main__``)."""
    name = MODULES[app]
    if module_entry:

        def main() -> None:
            runpy.run_module(name, run_name="__main__", alter_sys=True)
    else:
        main = importlib.import_module(name).main
    out, err = io.StringIO(), io.StringIO()
    with process_state():
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        if os.environ.get("OMP_NUM_THREADS"):  # read by a fresh process at torch's start
            import torch

            torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        os.chdir(cwd)
        sys.argv[:] = [app, *map(str, args)]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = _exit_status(main)
            except Exception:  # noqa: BLE001 - what the interpreter would print, status 1
                traceback.print_exc()
                status = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
    return subprocess.CompletedProcess([app, *args], status, out.getvalue(), err.getvalue())


def _exit_status(main: Callable[[], Any]) -> int:
    """``main()``'s exit status as the console script's wrapper would give it (its int
    return value, its SystemExit's code, else 0); other exceptions propagate."""
    try:
        result = main()
    except SystemExit as exc:
        return _status(exc)
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


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
    returns its exit status and what it printed. The process-wide state it changes is put
    back afterwards, as :func:`run_app` does."""
    monkeypatch.setenv("FERSUITE_ROOT", str(root))
    monkeypatch.setenv("FERSUITE_CACHE", str(root / "cache"))
    monkeypatch.chdir(root)
    monkeypatch.setattr(sys, "argv", [prog, *args])
    capsys.readouterr()
    with process_state():  # a training run's signal handlers, torch flags, log handlers
        status = _exit_status(main)
    captured = capsys.readouterr()
    return AppResult(status, captured.out, captured.err)
