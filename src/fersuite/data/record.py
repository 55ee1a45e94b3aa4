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
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from fersuite.config import CONFIG_DIR
from fersuite.config_schema import check_target_node
from fersuite.errors import ConfigError, UntrustedFileError, is_user_error, one_line

__all__ = [
    "INPUT_KEYS",
    "LOCAL_KEYS",
    "DataRecord",
    "read_data_record",
    "recorded_data_config",
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


#: data keys that come from the model card, not from the recorded training data
INPUT_KEYS = ("image_size", "in_chans", "mean", "std")


def _trusted_groups(config_dir: str | Path = CONFIG_DIR) -> dict[str, str]:
    """``_target_`` -> data config name, over the shipped ``conf/data/*.yaml``."""
    found: dict[str, str] = {}
    for path in sorted(Path(config_dir, "data").glob("*.yaml")):
        if path.stem.startswith("_"):
            continue
        target = OmegaConf.load(path).get("_target_")
        if isinstance(target, str):
            found.setdefault(target, path.stem)
    return found


def _compose_data(group: str) -> DictConfig:
    """The trusted ``data=<group>`` config (with ``paths``), composed by Hydra."""

    overrides = [f"data={group}"]
    if GlobalHydra.instance().is_initialized():
        return compose(config_name="export", overrides=overrides)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="export", overrides=overrides)


def recorded_data_config(raw_record: Any, source: str) -> tuple[str, DictConfig, DataRecord] | None:
    """The data config a checkpoint's record (``raw_record``, as stored; None: no record)
    stands for: ``(group, data node, the parsed record)``. The record is parsed first
    (:func:`read_data_record`); its target only selects a shipped
    ``conf/data/<group>.yaml``, composed by Hydra; only values of keys that config has are
    copied on (never :data:`INPUT_KEYS`, which are the model card's, nor :data:`LOCAL_KEYS`);
    then the command line's schema and the datamodule's own bounds are applied. None when
    there is no record."""
    record = read_data_record(raw_record, source)
    if record is None:
        return None
    groups = _trusted_groups()
    group = groups.get(record.target)
    if group is None:
        raise ConfigError(
            f"{source} was trained on data of type {record.target[:120]!r}, which no shipped "
            f"data config builds ({', '.join(sorted(groups.values()))}): name one with data=..."
        )
    if group == "multi":
        # Its sources (which datasets, their own keys) are not rebuilt from a record: the
        # shipped sources could be other data than the model saw.
        raise ConfigError(
            f"{source} was trained on data=multi (several datasets), which is not rebuilt from "
            "the checkpoint's record: name the test set, e.g. data=synthetic, or "
            "datasets=[...] for a cross-dataset matrix"
        )
    composed = _compose_data(group)
    node = composed.data
    with open_dict(node):
        for key, value in record.values.items():
            if key in node and key not in INPUT_KEYS and key not in LOCAL_KEYS:
                node[key] = value  # no '${' (read_data_record): stored as a literal
        node = OmegaConf.create(OmegaConf.to_container(node, resolve=False))
    merged = OmegaConf.create({"paths": composed.paths, "data": node})
    _check_recorded(merged.data, source)
    return group, merged.data, record


def _check_recorded(data: DictConfig, source: str) -> None:
    """The schema of a command line, then the datamodule's own bounds (its constructor, which
    reads and allocates nothing), applied to a data config rebuilt from a record: a value that
    cannot work is one line naming the checkpoint."""

    parent = data._get_parent()
    plain = OmegaConf.to_container(data, resolve=False)
    for key in INPUT_KEYS:  # the card's, set by datamodule_for_card; defaults meanwhile
        plain.pop(key, None)
    root = OmegaConf.create({"paths": parent.get("paths") if parent is not None else None})
    root.data = plain
    try:
        resolved = OmegaConf.to_container(root.data, resolve=True)
        check_target_node("data", resolved)
        instantiate(resolved)
    except Exception as exc:
        if not is_user_error(exc):
            raise
        raise ConfigError(f"{source}: training_data: {one_line(exc)}") from exc
