"""The errors that are the user's to fix, and how an app words them.

An app (``fersuite-train``, ``-data``, ``-profile``, ``-export``, ``-predict``, ``-report``)
answers an error of :func:`user_errors` with one line ``fersuite-<app>: error: ...`` and exit
status 2; a :class:`RunFailedError` with one line and exit status 1; any other exception is a
failed run (a bug): traceback logged, exit status 1. See
:mod:`fersuite.apps`.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["RunFailedError", "UserError", "is_user_error", "one_line", "user_errors"]


class UserError(Exception):
    """Bad input (a file, an argument, a setting) whose message is the whole story: one line,
    exit status 2."""


class RunFailedError(Exception):
    """A run that failed for a reason its message states (e.g. an exported model that does not
    match PyTorch): one line, exit status 1, no traceback."""


@functools.cache
def user_errors() -> tuple[type[BaseException], ...]:
    """Exception classes whose message names the bad input (imported on first use)."""
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
        SearchPathException,
    )

    from fersuite.callbacks.nonfinite_guard import NonFiniteError
    from fersuite.config import ConfigError
    from fersuite.data.errors import DataFormatError
    from fersuite.data.images import ImageReadError
    from fersuite.models.weights import PretrainedWeightsError

    return (
        UserError,
        ConfigError,
        DataFormatError,
        ImageReadError,
        PretrainedWeightsError,
        NonFiniteError,
        FileNotFoundError,
        # Hydra: the command line or a config file does not compose (unknown key or group
        # option, bad override syntax, missing config file).
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
        SearchPathException,
    )


def _unwrapped(exc: BaseException) -> BaseException:
    """The error below Hydra's ``InstantiationException`` wrapping (a constructor that
    rejected its config value raises a user error, which Hydra wraps)."""
    from hydra.errors import InstantiationException

    while isinstance(exc, InstantiationException) and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def is_user_error(exc: BaseException) -> bool:
    return isinstance(_unwrapped(exc), user_errors())


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` (and of an OmegaConf cause Hydra wraps) on one line."""
    exc = _unwrapped(exc)
    parts = [str(exc).strip()]
    cause = exc.__cause__
    if cause is not None and type(cause).__module__.startswith("omegaconf"):
        # e.g. "Key 'batch_szie' is not in struct" below Hydra's "Could not override ..."
        parts.append(str(cause).strip().splitlines()[0] if str(cause).strip() else "")
    text = " ".join(
        " ".join(line.strip() for line in p.splitlines() if line.strip()) for p in parts
    )
    return text or type(exc).__name__


def __getattr__(name: str) -> Any:
    if name == "USER_ERRORS":  # the tuple, as ``fersuite.resume.USER_ERRORS`` always was
        return user_errors()
    raise AttributeError(name)
