"""The errors that are the user's to fix, and how an app words them.

An app (``fersuite-train``, ``-data``, ``-profile``, ``-export``, ``-predict``, ``-report``)
answers an error of :func:`user_errors` with one line ``fersuite-<app>: error: ...`` and exit
status 2; a :class:`RunFailedError` with one line and exit status 1; any other exception is a
failed run (a bug): traceback logged, exit status 1. See
:mod:`fersuite.apps`.
"""

from __future__ import annotations

import errno
import functools

__all__ = [
    "RunFailedError",
    "UntrustedFileError",
    "UserError",
    "is_user_error",
    "one_line",
    "user_errors",
]


class UserError(Exception):
    """Bad input (a file, an argument, a setting) whose message is the whole story: one line,
    exit status 2."""


class UntrustedFileError(UserError, ValueError):
    """A file someone else made (checkpoint, resume state, ``model.json`` sidecar, exported
    ``.onnx``/``.pte``/``.pt`` model, stored data spec) that fersuite's reader refuses: its
    message names the file and the key or part, and what was expected. One line, exit 2, from
    every app; nothing in the file has run or been acted on."""


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


def _composition_hint(exc: BaseException) -> str | None:
    """A command line Hydra cannot compose, answered with the closest valid choice: an unknown
    key (``trainer.max_epoch=3``: Hydra's "Key ... is not in struct") → the closest key of the
    composed config or of its ``_target_``'s signature; an unknown group option
    (``model=mitfer``) → the closest option. None for any other error."""
    from hydra.errors import ConfigCompositionException, MissingConfigException

    if isinstance(exc, MissingConfigException):
        from fersuite.config_schema import closest

        group, _, option = str(exc.missing_cfg_file or "").rpartition("/")
        options = [str(o) for o in exc.options or [] if not str(o).startswith("_")]
        best = closest(option, options) if group and option else None
        if best is None:
            return None
        where = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.missing_cfg_file
        return f"{where}; did you mean {group}={best}? (options: {', '.join(options)})"
    if not isinstance(exc, ConfigCompositionException):
        return None
    from omegaconf import DictConfig
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    cause = exc.__cause__
    if not isinstance(cause, ConfigAttributeError | ConfigKeyError):
        return None
    node, key, full_key = cause.parent_node, cause.key, cause.full_key
    if not isinstance(node, DictConfig) or not isinstance(key, str) or not full_key:
        return None
    if key in node:
        return None
    from fersuite.config_schema import unknown_key_hint

    try:
        return unknown_key_hint(str(full_key), key, node)
    except Exception:  # noqa: BLE001 - fall back to Hydra's own message
        return None


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` (and of an OmegaConf cause Hydra wraps) on one line; a key or
    group option on the command line that Hydra cannot compose names the closest valid one."""
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
    hint = _composition_hint(exc)
    if hint is not None:
        return hint
    parts = [str(exc).strip()]
    cause = exc.__cause__
    if cause is not None and type(cause).__module__.startswith("omegaconf"):
        # e.g. "Key 'batch_szie' is not in struct" below Hydra's "Could not override ..."
        parts.append(str(cause).strip().splitlines()[0] if str(cause).strip() else "")
    text = " ".join(
        " ".join(line.strip() for line in p.splitlines() if line.strip()) for p in parts
    )
    return text or type(exc).__name__
