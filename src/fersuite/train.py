"""``fersuite-train``: the Hydra app that trains, tests and profiles one configuration.

The recipe: validate the config, build data, model, loss and module from config, fit, test
the best checkpoint, write ``metrics.json`` and print one summary table.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as L
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from fersuite.apps import run_app, task_wrapper
from fersuite.checkpoint import load_model_from_checkpoint
from fersuite.config import CONFIG_DIR, validate_config
from fersuite.evaluation import (
    ClassRemap,
    adopt_checkpoint_model,
    same_classes,
    wants_checkpoint_eval,
)
from fersuite.reporting.wandb_utils import update_wandb_summary
from fersuite.resume import prepare_resume, read_wandb_id, remember_wandb_id
from fersuite.utils.io import AtomicCheckpointIO, atomic_write_json
from fersuite.utils.run_info import environment, print_summary, write_metrics

log = logging.getLogger("fersuite.train")


def build_callbacks(cfg: DictConfig, has_logger: bool) -> list[L.Callback]:
    callbacks: list[L.Callback] = []
    for name, cb_cfg in (cfg.get("callbacks") or {}).items():
        if cb_cfg is None or "_target_" not in cb_cfg:
            continue
        if not has_logger and str(cb_cfg._target_).endswith("LearningRateMonitor"):
            continue
        log.debug("callback %s", name)
        callbacks.append(instantiate(cb_cfg))
    return callbacks


def build_plugins(cfg: DictConfig) -> list[Any]:
    """``trainer.plugins`` (e.g. a MixedPrecision plugin) plus the atomic checkpoint writer.

    The atomic writer is added unless the user's plugins bring their own ``CheckpointIO``.
    """
    from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO

    raw = cfg.trainer.get("plugins") or []
    items = list(raw) if isinstance(raw, ListConfig | list) else [raw]
    user = [instantiate(p) if isinstance(p, DictConfig) and "_target_" in p else p for p in items]
    if not any(isinstance(p, CheckpointIO) for p in user):
        user.append(AtomicCheckpointIO())
    return user


def build_loggers(cfg: DictConfig, wandb_id: str | None = None) -> list[Any]:
    loggers: list[Any] = []
    for name, lg_cfg in (cfg.get("logger") or {}).items():
        if lg_cfg is None:
            continue
        # Resuming: continue the same W&B run (fersuite.resume keeps its id in the run dir).
        extra: dict[str, Any] = (
            {"id": wandb_id, "resume": "allow"} if wandb_id and "wandb" in name else {}
        )
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
    from fersuite.card import training_card

    return training_card(
        OmegaConf.to_container(cfg.model, resolve=True),
        class_names=datamodule.class_names,
        has_va=bool(datamodule.has_va if has_va is None else has_va),
        input_size=datamodule.image_size,
        in_chans=datamodule.in_chans,
        mean=datamodule.mean,
        std=datamodule.std,
        face_crop=getattr(datamodule, "face_crop", None),
    )


def build_module(
    cfg: DictConfig, datamodule: Any, net: Any = None, net_has_va: bool = True
) -> L.LightningModule:
    """The LightningModule of ``cfg.task``; ``net`` (a trained network) skips building one
    (``net_has_va``: its checkpoint says its VA heads were trained)."""
    task = (cfg.get("task") or {}).get("name", "supervised")
    if task == "distill":
        from fersuite.modules.distill_module import build_distill_module

        return build_distill_module(cfg, datamodule)
    if task != "supervised":
        raise ValueError(f"task.name={task!r}; expected 'supervised' or 'distill'")
    if net is None:
        net = instantiate(cfg.model, num_classes=datamodule.num_classes)
    loss_cfg = OmegaConf.to_container(cfg.loss, resolve=True)
    assert isinstance(loss_cfg, dict)
    auto_weights = loss_cfg.get("class_weights") == "auto"
    if auto_weights:
        loss_cfg["class_weights"] = None
    loss = instantiate(loss_cfg)
    if auto_weights:
        datamodule.setup("fit")
        loss.set_class_weights(datamodule.class_weights())
    from fersuite.modules.affect_module import AffectModule

    return AffectModule(
        net=net,
        loss=loss,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        class_names=datamodule.class_names,
        # VA heads count only when the loss trains them (loss=ce does not): no VA metrics,
        # figures or checkpoint has_va otherwise.
        has_va=bool(datamodule.has_va and loss.trains_va and net_has_va),
        monitor=cfg.monitor,
        compile=cfg.get("compile", False),
        monitor_mode=cfg.get("monitor_mode"),
    )


def trained_net(cfg: DictConfig, datamodule: Any) -> Any:
    """The checkpoint's network, its logits remapped to the dataset's classes by name."""
    net, meta = load_model_from_checkpoint(str(cfg.ckpt_path))
    if same_classes(meta.class_names, datamodule.class_names):
        return net
    log.info(
        "evaluating a model of classes [%s] on [%s] (mapped by name)",
        ", ".join(meta.class_names),
        ", ".join(datamodule.class_names),
    )
    return ClassRemap(net, meta.class_names, datamodule.class_names)


def train(cfg: DictConfig) -> dict[str, float]:
    """Train and test one configuration; return its final metrics."""
    evaluating = wants_checkpoint_eval(cfg)
    # train=false ckpt_path=<file>: the checkpoint's model, any dataset
    ckpt_meta = adopt_checkpoint_model(cfg) if evaluating else None
    validate_config(cfg)
    ckpt_path = prepare_resume(cfg)  # resume=auto / ckpt_path; may switch paths.output_dir
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)

    datamodule = instantiate(cfg.data)
    module = build_module(
        cfg,
        datamodule,
        net=trained_net(cfg, datamodule) if evaluating else None,
        net_has_va=ckpt_meta.has_va if ckpt_meta is not None else True,
    )
    module.checkpoint_meta = checkpoint_metadata(
        cfg, datamodule, has_va=getattr(module, "has_va", None)
    )
    loggers = build_loggers(cfg, wandb_id=read_wandb_id(out_dir) if ckpt_path else None)
    remember_wandb_id(loggers, out_dir)
    callbacks = build_callbacks(cfg, has_logger=bool(loggers))
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=build_plugins(cfg)
    )

    if trainer.is_global_zero:
        atomic_write_json(
            out_dir / "run_info.json",
            {"config": OmegaConf.to_container(cfg, resolve=True), **environment()},
        )
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]

    if cfg.get("train", True):
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    values: dict[str, Any] = dict(trainer.callback_metrics)
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if cfg.get("test", True):
        ckpt = best if (best and cfg.get("train", True)) else None
        if ckpt is None and not cfg.get("train", True) and not evaluating:
            ckpt = cfg.get("ckpt_path")
        trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
        values.update(trainer.callback_metrics)
    for cb in callbacks:
        values.update(getattr(cb, "results", {}) or {})

    metrics: dict[str, float] = {}
    skipped = values.get("efficiency/skipped_ops")
    if skipped and trainer.is_global_zero:
        log.info("MACs do not count these operators (fvcore): %s", ", ".join(map(str, skipped)))
    if trainer.is_global_zero:
        metrics = write_metrics(out_dir / "metrics.json", values)
        update_wandb_summary(metrics)  # final test + efficiency figures in the W&B summary
        paths = {"checkpoint": best or "(none)", "run dir": str(out_dir)}
        print_summary(metrics, paths)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
@task_wrapper
def hydra_main(cfg: DictConfig) -> float | None:
    """The Hydra task: one training job (an exception fails the job; see fersuite.apps)."""
    with open_dict(cfg):
        cfg.paths.output_dir = cfg.paths.get("output_dir") or os.getcwd()
    metrics = train(cfg)
    key = cfg.get("optimized_metric")
    return metrics.get(key) if key else None


def main() -> None:
    """``fersuite-train``: bad input → one line, exit 2; failed run → exit 1 (fersuite.apps)."""
    run_app("train", hydra_main)


if __name__ == "__main__":
    main()
