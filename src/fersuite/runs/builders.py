"""The pieces of a run, each built from the composed config: callbacks, loggers, plugins,
the LightningModule of ``cfg.task.module`` and the checkpoint's plain-data metadata."""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as L
from hydra.utils import instantiate
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, ListConfig, OmegaConf

from fersuite.callbacks.checkpointing import RunCheckpoint
from fersuite.card import ModelCard
from fersuite.checkpoint import load_model_from_checkpoint, training_card
from fersuite.data.record import training_data_record
from fersuite.errors import ConfigError
from fersuite.labels import same_classes
from fersuite.models.heads import ClassRemap
from fersuite.utils.io import AtomicCheckpointIO

__all__ = [
    "build_callbacks",
    "build_loggers",
    "build_module",
    "build_plugins",
    "checkpoint_metadata",
    "trained_net",
]

log = logging.getLogger("fersuite.train")


def build_callbacks(cfg: DictConfig, has_logger: bool) -> list[L.Callback]:
    """The config's callbacks; a :class:`RunCheckpoint` when checkpointing is on and none of
    them is a ``ModelCheckpoint`` (instead of Lightning's unguarded default)."""
    callbacks: list[L.Callback] = []
    for name, cb_cfg in (cfg.get("callbacks") or {}).items():
        if cb_cfg is None or "_target_" not in cb_cfg:
            continue
        if not has_logger and str(cb_cfg._target_).endswith("LearningRateMonitor"):
            continue
        log.debug("callback %s", name)
        callback = instantiate(cb_cfg)
        if callback is not None:  # an option that is off (e.g. ema.decay=null) builds none
            callbacks.append(callback)
    checkpointing = cfg.get("trainer", {}).get("enable_checkpointing", True) is not False
    if checkpointing and not any(isinstance(cb, ModelCheckpoint) for cb in callbacks):
        # Lightning's own default, with the guard that keeps resumed paths inside the run
        callbacks.append(RunCheckpoint())
    return callbacks


def build_plugins(cfg: DictConfig) -> list[Any]:
    """``trainer.plugins`` (e.g. a MixedPrecision plugin) plus the atomic checkpoint writer.

    The atomic writer is added unless the user's plugins bring their own ``CheckpointIO``.
    """

    raw = cfg.trainer.get("plugins") or []
    items = list(raw) if isinstance(raw, ListConfig | list) else [raw]
    user = [instantiate(p) if isinstance(p, DictConfig) and "_target_" in p else p for p in items]
    if not any(isinstance(p, CheckpointIO) for p in user):
        user.append(AtomicCheckpointIO())
    return user


#: Lightning's CSV logger, as a config names it.
_LIGHTNING_CSV = (
    "lightning.pytorch.loggers.CSVLogger",
    "lightning.pytorch.loggers.csv_logs.CSVLogger",
)


def build_loggers(
    cfg: DictConfig, wandb_id: str | None = None, csv_keep_before: int | None = None
) -> list[Any]:
    """The loggers of ``cfg.logger``; one that cannot start is left out (with a warning).

    Resuming: ``wandb_id`` continues that W&B run; Lightning's CSV logger becomes
    :class:`fersuite.loggers.ResumedCSVLogger`, which keeps the history's rows logged before
    step ``csv_keep_before`` (the checkpoint's)."""
    loggers: list[Any] = []
    for name, lg_cfg in (cfg.get("logger") or {}).items():
        if lg_cfg is None:
            continue
        # Resuming: continue the same W&B run (fersuite.runs.resume keeps its id in the run dir).
        extra: dict[str, Any] = (
            {"id": wandb_id, "resume": "allow"} if wandb_id and "wandb" in name else {}
        )
        if csv_keep_before is not None and lg_cfg.get("_target_") in _LIGHTNING_CSV:
            extra.update(_target_="fersuite.loggers.ResumedCSVLogger", keep_before=csv_keep_before)
        if "wandb" in name and cfg.get("tags"):  # a preset's tags join model/data/loss
            tags = [*(lg_cfg.get("tags") or []), *cfg.tags]
            extra["tags"] = list(dict.fromkeys(str(t) for t in tags))
        try:
            lg = instantiate(lg_cfg, **extra)
            if lg is not None and "wandb" in name:
                _ = lg.experiment  # initialise now, so a failure falls back to CSV at once
        except Exception as exc:  # noqa: BLE001
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            log.warning("logger %s could not start (%s); continuing without it", name, first)
            continue
        if lg is not None:
            loggers.append(lg)
    return loggers


def checkpoint_metadata(
    cfg: DictConfig, datamodule: Any, has_va: bool | None = None
) -> dict[str, Any]:
    """The model card (:class:`fersuite.card.ModelCard`, plain data) stored in every checkpoint
    so the model can be rebuilt safely and fed what it learned from.

    ``has_va``: the model's valence/arousal heads were trained (the module's ``has_va``: data
    with VA and a loss that trains it); defaults to the dataset's. The face crop is the
    datamodule's ``face_crop``."""

    card = training_card(
        OmegaConf.to_container(cfg.model, resolve=True),
        class_names=datamodule.class_names,
        has_va=bool(datamodule.has_va if has_va is None else has_va),
        input_size=datamodule.image_size,
        in_chans=datamodule.in_chans,
        mean=datamodule.mean,
        std=datamodule.std,
        face_crop=getattr(datamodule, "face_crop", None),
    )
    # Where calibration images for a quantised export come from (plain data; never
    # instantiated: fersuite.deploy.calibration maps it onto a shipped data config).
    record = training_data_record(cfg.get("data"))
    if record is not None:
        card["training_data"] = record
    return card


def build_module(cfg: DictConfig, datamodule: Any, **kwargs: Any) -> L.LightningModule:
    """The LightningModule named by ``cfg.task.module`` (a partial builder taking
    ``(cfg, datamodule)``: ``conf/task/*.yaml``); ``kwargs`` go to that builder."""
    node = (cfg.get("task") or {}).get("module")
    if node is None or "_target_" not in node:
        raise ConfigError("task.module: expected a _target_ (a builder of the LightningModule)")
    builder = instantiate(node)
    return builder(cfg, datamodule, **kwargs)


def trained_net(ckpt_path: str, datamodule: Any) -> tuple[Any, ModelCard]:
    """The checkpoint's network (logits remapped to the dataset's classes by name) and its
    metadata."""
    net, meta = load_model_from_checkpoint(str(ckpt_path))
    if same_classes(meta.class_names, datamodule.class_names):
        return net, meta
    log.info(
        "evaluating a model of classes [%s] on [%s] (mapped by name)",
        ", ".join(meta.class_names),
        ", ".join(datamodule.class_names),
    )
    return ClassRemap(net, meta.class_names, datamodule.class_names), meta
