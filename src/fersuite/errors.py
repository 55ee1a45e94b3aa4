"""Every error fersuite raises on purpose, and how an app words it. Imports nothing from
fersuite: this is the ground floor.

Two families, two exit statuses (see :mod:`fersuite.apps`):

* :class:`UserError` — bad input whose message is the whole story (a config value, a data
  file, a checkpoint, an image, a command line): one line ``fersuite-<app>: error: ...`` and
  exit status 2. Every more specific user error below derives from it.
* :class:`RunFailedError` — a run that failed for a reason its message states (e.g. an export
  that does not match PyTorch): one line, exit status 1.

Any other exception is a failed run (a bug): traceback logged, exit status 1.
"""

from __future__ import annotations

import errno
import functools

from hydra.errors import (
    ConfigCompositionException,
    InstantiationException,
    MissingConfigException,
    OverrideParseException,
    SearchPathException,
)

__all__ = [
    "ConfigError",
    "DataFormatError",
    "ExportError",
    "ImageReadError",
    "InputError",
    "ModelCardError",
    "ModelCardFormatError",
    "NonFiniteError",
    "PredictError",
    "PretrainedWeightsError",
    "RunFailedError",
    "RunLockedError",
    "UntrustedFileError",
    "UserError",
    "VideoReadError",
    "is_user_error",
    "one_line",
    "storage_error",
    "user_errors",
]


class UserError(Exception):
    """Bad input (a file, an argument, a setting) whose message is the whole story: one line,
    exit status 2."""


class RunFailedError(Exception):
    """A run that failed for a reason its message states (e.g. an exported model that does not
    match PyTorch): one line, exit status 1, no traceback."""


# --- user errors (exit 2) ------------------------------------------------------------------


class ConfigError(UserError, ValueError):
    """A config value that cannot work, named with its key."""


class DataFormatError(UserError, ValueError):
    """A dataset file, row or image that does not match its public format: one line naming the
    file (and line, or image path) and what was expected."""


class ImageReadError(UserError, ValueError):
    """An image that cannot be decoded (the caller adds the path)."""


class UntrustedFileError(UserError, ValueError):
    """A file someone else made (checkpoint, resume state, ``model.json`` sidecar, exported
    ``.onnx``/``.pte``/``.pt`` model, stored data spec) that fersuite's reader refuses: its
    message names the file and the key or part, and what was expected. One line, exit 2, from
    every app; nothing in the file has run or been acted on."""


class ModelCardFormatError(UntrustedFileError):
    """A model card (checkpoint metadata or sidecar) that is not in the expected shape."""


class PretrainedWeightsError(UserError, RuntimeError):
    """Local weights that are missing, unsafe, or do not fit the model."""


class ModelCardError(PretrainedWeightsError):
    """A model config read from a file is not an architecture name plus plain values."""


class NonFiniteError(UserError, RuntimeError):
    """Training met a non-finite loss, gradient or weight."""


class RunLockedError(UserError):
    """Another live run writes into this run dir."""


class PredictError(UserError, ValueError):
    """Bad input to fersuite-predict (one line naming the file or key)."""


class InputError(PredictError):
    """An input (image, video, camera, named path) that cannot be read: ``<file>: <why>``."""

    def __init__(self, file: str, why: str) -> None:
        super().__init__(f"{file}: {why}")
        self.file = file
        self.why = why


class VideoReadError(PredictError):
    """A video or camera that cannot be read (one line naming it)."""


# --- failed runs (exit 1) ------------------------------------------------------------------


class ExportError(RunFailedError, RuntimeError):
    """An export that failed or whose outputs do not match PyTorch."""


@functools.cache
def user_errors() -> tuple[type[BaseException], ...]:
    """Exception classes whose message names the bad input (imported on first use)."""

    return (
        UserError,
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

    while isinstance(exc, InstantiationException) and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


#: A folder the user named that cannot be written: bad input (exit 2).
NOT_WRITABLE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
#: The disk filled up while the run wrote: a failed run (exit 1), still one line.
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def storage_error(exc: BaseException) -> str | None:
    """``"not_writable"`` or ``"disk_full"`` for an OSError of that kind, else None."""
    exc = _unwrapped(exc)
    if isinstance(exc, OSError) and exc.errno in NOT_WRITABLE:
        return "not_writable"
    if isinstance(exc, OSError) and exc.errno in DISK_FULL:
        return "disk_full"
    return None


def is_user_error(exc: BaseException) -> bool:
    return isinstance(_unwrapped(exc), user_errors()) or storage_error(exc) == "not_writable"


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` (and of an OmegaConf cause Hydra wraps) on one line. (A command
    line Hydra cannot compose is worded by :func:`fersuite.config_schema.composition_hint`.)"""
    exc = _unwrapped(exc)
    kind = storage_error(exc)
    if kind is not None and isinstance(exc, OSError):
        where = exc.filename or "a file of the run"
        need = (
            "write access to that folder (or another one, e.g. paths.root_dir=<dir>)"
            if kind == "not_writable"
            else "free space on that disk (or another folder, e.g. paths.root_dir=<dir>)"
        )
        return f"cannot write {where}: {exc.strerror or type(exc).__name__}; needs {need}"
    parts = [str(exc).strip()]
    cause = exc.__cause__
    if cause is not None and type(cause).__module__.startswith("omegaconf"):
        # e.g. "Key 'batch_szie' is not in struct" below Hydra's "Could not override ..."
        parts.append(str(cause).strip().splitlines()[0] if str(cause).strip() else "")
    text = " ".join(
        " ".join(line.strip() for line in p.splitlines() if line.strip()) for p in parts
    )
    return text or type(exc).__name__
