"""Images for quantising an exported model: calibration (train split) and held-out (val split).

A quantised export is calibrated on ``export.calibration_samples`` training images and judged
on ``export.held_out_samples`` validation images -- never the same ones -- read through the
model card's preprocessing (the datamodule's evaluation transform with the card's input spec:
no augmentation).

Which dataset: ``data=<name>`` given to ``fersuite-export``, else the one the checkpoint was
trained on. A checkpoint records that as plain data (:mod:`fersuite.data.record`). That record is
someone else's file: :func:`~fersuite.data.record.read_data_record` parses and bounds it first
(an interpolation such as ``${oc.decode:...}`` is refused, never resolved), its ``_target_``
only selects one of the trusted ``conf/data/*.yaml`` configs shipped with fersuite, only values
of keys that config already has are copied onto it (e.g. ``root``, ``train_size``; never the
cache dir or loader settings, which are this machine's), and the result is checked by the same
schema as a command line (:func:`fersuite.config_schema.check_target_node`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from fersuite.card import ModelCard
from fersuite.checkpoint import META_KEY, read_checkpoint
from fersuite.config_schema import check_target_node
from fersuite.data.record import INPUT_KEYS, recorded_data_config
from fersuite.errors import ConfigError
from fersuite.labels import class_index_map, same_classes

__all__ = [
    "INPUT_KEYS",
    "data_config_for",
    "datamodule_for_card",
    "export_data_config",
    "image_batches",
]


def data_config_for(cfg: DictConfig, raw_record: Any, source: str, why: str) -> DictConfig:
    """The data config to read images from: ``cfg.data`` when the user chose one, else the
    trusted config the checkpoint's record (``raw_record``, as stored) names
    (:func:`~fersuite.data.record.recorded_data_config`)."""
    if cfg.get("data") is not None:
        return cfg.data
    recorded = recorded_data_config(raw_record, source)
    if recorded is None:
        raise ConfigError(
            f"{why} needs images, and {source} does not record its training data: "
            "name a dataset, e.g. data=fer2013 data.root=<dir>"
        )
    return recorded[1]


def export_data_config(cfg: DictConfig, ckpt_path: str, why: str) -> DictConfig:
    """:func:`data_config_for` with the record stored in the checkpoint ``ckpt_path``."""
    raw = None
    if cfg.get("data") is None:
        meta = read_checkpoint(ckpt_path).get(META_KEY)
        raw = meta.get("training_data") if isinstance(meta, dict) else None
    return data_config_for(cfg, raw, ckpt_path, why)


def datamodule_for_card(data_cfg: DictConfig, card: ModelCard) -> Any:
    """The datamodule of ``data_cfg`` with the card's input spec (size, channels, mean, std)."""

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
    # the same schema as a command line: keys and value types of the datamodule, before it
    # is built (its constructor then bounds the sizes before allocating anything)
    check_target_node("data", resolved)
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
