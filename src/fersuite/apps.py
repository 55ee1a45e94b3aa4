"""How every console script ends: one wrapper for ``fersuite-train``, ``-data``, ``-profile``,
``-export``, ``-predict`` and ``-report``.

* Bad input (:func:`fersuite.errors.user_errors`: a config value, a data file, a checkpoint,
  a non-finite loss, a missing file, a command line Hydra cannot compose) → one line
  ``fersuite-<app>: error: ...`` on stderr, exit status 2.
* A :class:`fersuite.errors.RunFailedError` (a failure its message explains, e.g. an export that
  does not match PyTorch) → one line, exit status 1.
* A folder that cannot be written (permission, read-only file system) → one line naming the
  path and what is needed, exit status 2; a full disk → one line, exit status 1.
* Any other exception is a failed run, i.e. a bug → its traceback is logged, exit status 1.
* A multirun (``--multirun`` or ``hydra.mode: MULTIRUN`` in a preset, e.g. ``hparams_search``)
  never stops at a failed job: the job raises, Hydra records it (``error.txt`` in the job dir,
  a *failed* row of the sweep report, an Optuna trial in state FAIL) and the sweeper goes on
  (Optuna: within ``hydra.sweeper.max_failure_rate``). At the end the app prints
  ``N of M jobs failed`` and exits with status 1 when any failed, 0 otherwise.
* The W&B run is always finished (:func:`fersuite.loggers.finish_wandb`).
* glibc's allocator is tuned for large tensors first (:func:`fersuite.utils.malloc.tune_malloc`;
  ``FERSUITE_MALLOC_TUNING=0`` turns it off).

Hydra apps are wrapped twice: :func:`task_wrapper` around the task function (below
``@hydra.main``; it logs a failed multirun job in that job's log, finishes W&B and re-raises)
and :func:`run_app` around the ``@hydra.main`` function (the console script). ``run_app`` sets
``HYDRA_FULL_ERROR=1`` while Hydra runs, so that Hydra re-raises composition errors and job
exceptions instead of printing a traceback and calling ``sys.exit(1)`` itself.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from fersuite.config_schema import composition_hint
from fersuite.errors import RunFailedError, is_user_error, one_line, storage_error
from fersuite.loggers import finish_wandb
from fersuite.reporting.hydra_callback import SWEEPS_STARTED
from fersuite.reporting.jobs import collect_sweep
from fersuite.utils.malloc import tune_malloc

__all__ = ["in_multirun", "message", "run_app", "task_wrapper"]

log = logging.getLogger("fersuite.apps")

F = TypeVar("F", bound=Callable[..., Any])

#: The exception of a failed single run, handed from the task function to run_app (so that
#: Hydra does not print its own report of it).
_RUN_ERRORS: list[BaseException] = []


def in_multirun() -> bool:
    """True inside a job of a Hydra multirun, however it was started (CLI flag or config)."""
    try:
        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # noqa: BLE001 - no Hydra job (library use)
        return False


def _finish_wandb() -> None:

    finish_wandb()


def task_wrapper(fn: F) -> F:
    """Wrap a Hydra task function; always finish W&B.

    In a multirun job an exception is logged in the job's log and re-raised (an
    ``Exception``, so the sweeper records the job as failed and goes on). In a single run it
    is handed to :func:`run_app`, which answers it (one line and 2, or traceback and 1).
    """

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not in_multirun():
                _RUN_ERRORS.append(exc)
                return None
            if is_user_error(exc):
                log.error("job failed: %s", message(exc))
            else:
                log.error("job failed", exc_info=exc)
            raise
        finally:
            _finish_wandb()

    return wrapped  # type: ignore[return-value]


def _failures(sweeps: list[str]) -> tuple[int, int, str]:
    """(failed jobs, jobs, report path) over the sweep dirs of this process."""

    existing = [s for s in sweeps if Path(s).is_dir()]
    if not existing:
        return 0, 0, ""
    try:
        jobs = collect_sweep(existing)
    except Exception as exc:  # noqa: BLE001 - the summary must not hide the real outcome
        log.warning("could not read the sweep dir(s) %s: %s", existing, exc)
        return 0, 0, ""
    # A trial cut short by a dead sweeper was re-tried by the search that resumed it
    # (fersuite.search): reported as failed, not a failure of this run.
    failed = sum(j.status != "ok" and not j.cut_short for j in jobs)
    return failed, len(jobs), str(Path(existing[-1]) / "report.md")


def message(exc: BaseException) -> str:
    """What an app says about ``exc``, on one line: a command line Hydra cannot compose names
    the closest valid key or option; anything else is :func:`fersuite.errors.one_line`."""
    return composition_hint(exc) or one_line(exc)


def _answer(prog: str, exc: BaseException) -> int:
    if is_user_error(exc):
        print(f"{prog}: error: {message(exc)}", file=sys.stderr, flush=True)
        return 2
    if isinstance(exc, RunFailedError) or storage_error(exc) == "disk_full":
        print(f"{prog}: error: {message(exc)}", file=sys.stderr, flush=True)
        return 1
    log.error("%s failed (a bug: please report it with this traceback)", prog, exc_info=exc)
    print(f"{prog}: failed: {type(exc).__name__}: {message(exc)}", file=sys.stderr, flush=True)
    return 1


def run_app(app: str, main: Callable[..., Any], *args: Any) -> None:
    """Run a console script's ``main`` and turn its outcome into the exit status.

    Returns when everything succeeded (exit status 0); otherwise exits with 2 (bad input) or
    1 (failed run, or failed jobs of a multirun). An ``int`` returned by ``main`` (an
    argparse-style app) is its exit status.
    """
    prog = f"fersuite-{app}"
    tune_malloc()  # before the first large allocation (FERSUITE_MALLOC_TUNING=0: off)
    SWEEPS_STARTED.clear()
    _RUN_ERRORS.clear()
    saved = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    result, error = None, None
    try:
        result = main(*args)
    except Exception as exc:  # noqa: BLE001 - classified below
        error = exc
    finally:
        if saved is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved
        _finish_wandb()
    if error is None and _RUN_ERRORS:
        error = _RUN_ERRORS[0]
    failed, total, report = _failures(SWEEPS_STARTED) if SWEEPS_STARTED else (0, 0, "")
    if failed:
        # Jobs failed (each recorded in its error.txt and the report); the sweeper may also
        # have re-raised one of them at the end (Hydra's basic sweeper does).
        if error is not None and not is_user_error(error):
            log.debug("the multirun ended with", exc_info=error)
        print(
            f"{prog}: error: {failed} of {total} jobs failed (see {report})",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(1)
    if error is not None:
        sys.exit(_answer(prog, error))
    if isinstance(result, int) and not isinstance(result, bool) and result:
        sys.exit(result)
