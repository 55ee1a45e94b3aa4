"""The record of a run's training data that a checkpoint carries, written and read as data.

A checkpoint stores what it was trained on under ``fersuite.training_data``:
``{"target": <the datamodule's _target_>, "values": {key: plain value}}``
(:func:`training_data_record`). A quantised export rebuilds calibration and held-out images
from it. The record is someone else's file, so :func:`read_data_record` parses it into plain,
bounded values *before* any of it is used: a string holding ``${`` (an OmegaConf
interpolation or resolver such as ``${oc.decode:...}`` or ``${oc.env:...}``) is refused, never
resolved; numbers must be finite and within :data:`MAX_INT`; at most :data:`MAX_KEYS` keys,
:data:`MAX_LIST` list items and :data:`MAX_STR` characters per string; a nested mapping (e.g.
an ``augment`` node recorded by older versions) is skipped unread: nothing in it is used or
built. Each violation is one :class:`~fersuite.errors.UntrustedFileError` naming the file and
the key.

Keys that say where *this machine* writes or how it loads (:data:`LOCAL_KEYS`: the cache dir,
loader workers) never come from a record: the local, trusted config decides them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fersuite.errors import UntrustedFileError

__all__ = [
    "LOCAL_KEYS",
    "DataRecord",
    "read_data_record",
    "training_data_record",
]

#: Bounds of a stored data record.
MAX_KEYS = 64
MAX_LIST = 64
MAX_STR = 4096
MAX_INT = 2**31 - 1
#: Data keys the local config decides (where caches are written, loader processes).
LOCAL_KEYS = frozenset({"cache_dir", "num_workers", "persistent_workers", "pin_memory"})

Scalar = str | int | float | bool | None


@dataclass(frozen=True)
class DataRecord:
    """A parsed training-data record: the datamodule's ``_target_`` and plain values."""

    target: str
    values: dict[str, Scalar | list[Scalar]]


def _plain(value: Any) -> bool:
    if isinstance(value, str | int | float | bool | type(None)):
        return True
    if isinstance(value, list | tuple):
        return all(isinstance(v, str | int | float | bool | type(None)) for v in value)
    return False


def training_data_record(data_cfg: Any) -> dict[str, Any] | None:
    """What a checkpoint records about its training data: ``{"target", "values"}`` with the
    config's top-level plain values (scalars and lists of scalars), resolved by the run that
    trusts its own config. None when the config cannot be resolved to plain data."""
    if data_cfg is None:
        return None
    try:
        raw = (
            OmegaConf.to_container(data_cfg, resolve=True)
            if isinstance(data_cfg, DictConfig)
            else dict(data_cfg)
        )
    except OmegaConfBaseException:  # an interpolation only the app resolves: nothing recorded
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("_target_"), str):
        return None
    values = {
        str(k): list(v) if isinstance(v, tuple) else v
        for k, v in raw.items()
        if isinstance(k, str) and not k.startswith("_") and _plain(v)
    }
    return {"target": raw["_target_"], "values": values}


def _scalar(value: Any, key: str, source: str) -> Scalar:
    def refuse(what: str) -> UntrustedFileError:
        return UntrustedFileError(f"{source}: training_data.{key}: {what}")

    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if abs(value) > MAX_INT:
            raise refuse(f"{value} is out of range; expected |value| <= {MAX_INT}")
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise refuse(f"{value}; expected a finite number")
        return float(value)
    if isinstance(value, str):
        if len(value) > MAX_STR:
            raise refuse(f"a string of {len(value)} characters; expected <= {MAX_STR}")
        if "${" in value:
            raise refuse(
                f"{value[:80]!r} holds an interpolation ('${{'); stored values are data, "
                "never resolved"
            )
        if any(ord(c) < 32 for c in value):
            raise refuse("a string with control characters (newline, NUL, ...)")
        return value
    raise refuse(f"a {type(value).__name__}; expected a string, number, boolean or null")


def read_data_record(raw: Any, source: str) -> DataRecord | None:
    """Parse the ``training_data`` entry of a checkpoint's card (``raw``; None: no record).

    Returns plain typed values, or raises :class:`UntrustedFileError` (module doc)."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise UntrustedFileError(
            f"{source}: training_data is a {type(raw).__name__}; expected a mapping"
        )
    unknown = sorted(str(k) for k in raw if k not in ("target", "values"))
    if unknown:
        raise UntrustedFileError(
            f"{source}: training_data has unknown keys {unknown[:5]}; expected target, values"
        )
    target = raw.get("target")
    if not isinstance(target, str) or not target or len(target) > 256:
        raise UntrustedFileError(
            f"{source}: training_data.target={target!r:.80}; expected a datamodule name"
        )
    values = raw.get("values") or {}
    if not isinstance(values, Mapping):
        raise UntrustedFileError(
            f"{source}: training_data.values is a {type(values).__name__}; expected a mapping"
        )
    if len(values) > MAX_KEYS:
        raise UntrustedFileError(
            f"{source}: training_data.values has {len(values)} keys; expected <= {MAX_KEYS}"
        )
    out: dict[str, Scalar | list[Scalar]] = {}
    for key, value in values.items():
        if not isinstance(key, str) or not key.isidentifier() or len(key) > 64:
            raise UntrustedFileError(
                f"{source}: training_data.values has the key {str(key)[:80]!r}; "
                "expected a Python identifier"
            )
        if isinstance(value, Mapping):
            continue  # not a value a data config takes from a record (module doc)
        if isinstance(value, list | tuple):
            if len(value) > MAX_LIST:
                raise UntrustedFileError(
                    f"{source}: training_data.{key} has {len(value)} items; expected <= {MAX_LIST}"
                )
            out[key] = [_scalar(v, f"{key}[{i}]", source) for i, v in enumerate(value)]
        else:
            out[key] = _scalar(value, key, source)
    return DataRecord(target=target, values=out)
