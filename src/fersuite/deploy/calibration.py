"""Images for quantising an exported model: calibration (train split) and held-out (val split).

A quantised export is calibrated on ``export.calibration_samples`` training images and judged
on ``export.held_out_samples`` validation images -- never the same ones -- read through the
model card's preprocessing (the datamodule's evaluation transform with the card's input spec:
no augmentation).

Which dataset: ``data=<name>`` given to ``fersuite-export``, else the one the checkpoint was
trained on. A checkpoint records that as plain data (:func:`training_data_record`: the
datamodule's ``_target_`` and its plain values). That record is someone else's file, so it is
never instantiated: its ``_target_`` only selects one of the trusted ``conf/data/*.yaml``
configs shipped with fersuite, and only plain values of keys that config already has are
copied onto it (e.g. ``data_dir``, ``train_size``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from fersuite.card import ModelCard
from fersuite.config import CONFIG_DIR, ConfigError

__all__ = [
    "INPUT_KEYS",
    "data_config_for",
    "datamodule_for_card",
    "export_data_config",
    "image_batches",
    "training_data_record",
]

#: data keys that come from the model card, not from the recorded training data
INPUT_KEYS = ("image_size", "in_chans", "mean", "std")
_PLAIN = (str, int, float, bool, type(None))


def _is_plain(value: Any) -> bool:
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, list | tuple):
        return all(isinstance(v, _PLAIN) for v in value)
    if isinstance(value, Mapping):  # no ``_target_``/``_partial_``: nothing Hydra would build
        return all(
            isinstance(k, str) and not k.startswith("_") and _is_plain(v) for k, v in value.items()
        )
    return False


def training_data_record(data_cfg: Any) -> dict[str, Any] | None:
    """What a checkpoint records about its training data: ``{"target", "values"}``, plain
    values only (None when the config cannot be resolved to plain data)."""
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
        str(k): v
        for k, v in raw.items()
        if isinstance(k, str) and not k.startswith("_") and _is_plain(v)
    }
    return {"target": raw["_target_"], "values": values}


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
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    overrides = [f"data={group}"]
    if GlobalHydra.instance().is_initialized():
        return compose(config_name="export", overrides=overrides)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="export", overrides=overrides)


def data_config_for(
    cfg: DictConfig, record: Mapping[str, Any] | None, source: str, why: str
) -> DictConfig:
    """The data config to read images from: ``cfg.data`` when the user chose one, else the
    trusted config matching the checkpoint's ``record`` with its plain values copied on."""
    if cfg.get("data") is not None:
        return cfg.data
    if not record or not isinstance(record.get("target"), str):
        raise ConfigError(
            f"{why} needs images, and {source} does not record its training data: "
            "name a dataset, e.g. data=fer2013 data.data_dir=<dir>"
        )
    groups = _trusted_groups()
    group = groups.get(record["target"])
    if group is None:
        raise ConfigError(
            f"{source} was trained on data of type {record['target']!r}, which no shipped "
            f"data config builds ({', '.join(sorted(groups.values()))}): name one with data=..."
        )
    composed = _compose_data(group)
    node = composed.data
    values = record.get("values") or {}
    with open_dict(node):
        for key, value in values.items():
            usable = key in node and key not in INPUT_KEYS and not key.startswith("_")
            if usable and _is_plain(value):
                node[key] = value
        # resolve ${paths...} against the composed config, then detach
        node = OmegaConf.create(OmegaConf.to_container(node, resolve=False))
    merged = OmegaConf.create({"paths": composed.paths, "data": node})
    return merged.data


def export_data_config(cfg: DictConfig, ckpt_path: str, why: str) -> DictConfig:
    """:func:`data_config_for` with the record read from the checkpoint ``ckpt_path``."""
    record = None
    if cfg.get("data") is None:
        from fersuite.checkpoint import META_KEY, read_checkpoint

        meta = read_checkpoint(ckpt_path).get(META_KEY)
        record = meta.get("training_data") if isinstance(meta, dict) else None
    return data_config_for(cfg, record, ckpt_path, why)


def datamodule_for_card(data_cfg: DictConfig, card: ModelCard) -> Any:
    """The datamodule of ``data_cfg`` with the card's input spec (size, channels, mean, std)."""
    from hydra.utils import instantiate

    node = OmegaConf.create(OmegaConf.to_container(data_cfg, resolve=False))
    parent = data_cfg._get_parent()
    root = OmegaConf.create({"paths": parent.get("paths") if parent is not None else None})
    root.data = node
    with open_dict(root):
        for key, value in (
            ("image_size", card.input_size),
            ("in_chans", card.in_chans),
            ("mean", list(card.input.mean)),
            ("std", list(card.input.std)),
        ):
            if key in root.data:
                root.data[key] = value
    try:
        resolved = OmegaConf.to_container(root.data, resolve=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"data: cannot resolve the dataset config: {exc}") from exc
    dm = instantiate(resolved)
    dm.setup("fit")
    return dm


def image_batches(
    dm: Any,
    split: str,
    n: int,
    card: ModelCard,
    batch_size: int = 64,
    seed: int = 0,
    skip: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` images of ``split`` (a seeded random subset, after ``skip`` of them), as the model
    sees them at evaluation (no augmentation), with hard labels in the *model's* class order."""
    from fersuite.evaluation import class_index_map, same_classes

    ds = dm.dataset(split, train=False)
    total = len(ds)
    if total == 0:
        raise ConfigError(f"data: the {split} split is empty")
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed)).tolist()
    picked = order[skip : skip + n] if skip < total else []
    if not picked:
        raise ConfigError(f"data: the {split} split has {total} images; none left to use")
    remap = None
    if not same_classes(card.class_names, dm.class_names):
        remap = torch.tensor(class_index_map(card.class_names, dm.class_names))
    for start in range(0, len(picked), batch_size):
        items = [ds[i] for i in picked[start : start + batch_size]]
        x = torch.stack([it["image"] for it in items]).float()
        y = torch.stack([it["expression"] for it in items])
        if y.ndim == 2:  # vote distributions (FER+): the majority class
            y = y.argmax(1)
        y = y.long()
        if remap is not None:
            y = remap[y]
        yield x, y
