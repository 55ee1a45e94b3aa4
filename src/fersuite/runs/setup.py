"""One run's set-up and finish, shared by training and evaluation: every config change before
the run starts (:func:`prepare_run`), the trainer with its callbacks, loggers and plugins
(:func:`make_trainer`), and ``metrics.json`` plus the summary table at the end
(:func:`finish_run`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from fersuite.config import validate_config
from fersuite.reporting.wandb_utils import update_wandb_summary
from fersuite.runs import lock
from fersuite.runs.builders import build_callbacks, build_loggers, build_plugins
from fersuite.runs.resume import (
    ApplyOptimizerConfig,
    FitMetrics,
    Resumed,
    prepare_resume,
    read_wandb_id,
    remember_wandb_id,
)
from fersuite.utils.io import atomic_write_json, remove_stale_tmp
from fersuite.utils.run_info import environment, print_summary, write_metrics

__all__ = ["finish_run", "make_trainer", "prepare", "prepare_run"]

log = logging.getLogger("fersuite.train")


def prepare_run(cfg: DictConfig, resume: bool = True) -> tuple[Path, str | None]:
    """The config changes of a run, in one place, before anything is built: the output dir
    (the Hydra run dir, else the working dir), validation, resume (``resume=auto`` /
    ``ckpt_path``; may switch ``paths.output_dir``) and the seed.

    Returns the run dir and the checkpoint to resume from (None: a fresh run)."""
    out_dir, resumed = prepare(cfg, resume=resume, take_lock=False)
    return out_dir, resumed.ckpt_path if resumed else None


def prepare(cfg: DictConfig, resume: bool, take_lock: bool) -> tuple[Path, Resumed | None]:
    with open_dict(cfg):
        cfg.paths.output_dir = cfg.paths.get("output_dir") or os.getcwd()
    validate_config(cfg)
    resumed = prepare_resume(cfg) if resume else None
    out_dir = Path(cfg.paths.output_dir)
    if take_lock:
        lock.acquire(out_dir)  # before the first write into the run dir
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0:
            # what a killed run was writing when it died (other ranks may be writing already)
            for stale in remove_stale_tmp(out_dir):
                log.info("removed %s, left by an interrupted write", stale)
            if resumed is not None and resumed.lengthened_finished:
                # trained on: metrics.json is written anew at the end (val/* and test/*)
                (out_dir / "metrics.json").unlink(missing_ok=True)
        if cfg.get("seed") is not None:
            L.seed_everything(cfg.seed, workers=True)
    except BaseException:
        if take_lock:
            lock.release(out_dir)
        raise
    return out_dir, resumed


def make_trainer(
    cfg: DictConfig,
    out_dir: Path,
    resuming: bool = False,
    extra: dict[str, Any] | None = None,
    resumed: Resumed | None = None,
) -> tuple[L.Trainer, list[L.Callback]]:
    """The Lightning trainer of ``cfg.trainer`` with the config's callbacks, loggers and
    plugins; writes ``run_info.json`` (config, environment and ``extra``).

    ``resumed``: the CSV history keeps the rows before the checkpoint's step, and an allowed
    ``optimizer.*`` change is applied to the restored optimizer. Every checkpoint keeps the
    fit's figures (:class:`~fersuite.runs.resume.FitMetrics`, one of the callbacks)."""
    resuming = resuming or resumed is not None
    loggers = build_loggers(
        cfg,
        wandb_id=read_wandb_id(out_dir) if resuming else None,
        csv_keep_before=resumed.global_step if resumed is not None else None,
    )
    remember_wandb_id(loggers, out_dir)
    callbacks = [*build_callbacks(cfg, has_logger=bool(loggers)), FitMetrics()]
    if resumed is not None and any(k.startswith("optimizer") for k in resumed.changes):
        callbacks = [*callbacks, ApplyOptimizerConfig()]
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=build_plugins(cfg)
    )
    config = OmegaConf.to_container(cfg, resolve=True)
    if trainer.is_global_zero:
        # tta: how validation and test predicted (averaged over the mirror image or not).
        info = {"config": config, "tta": str(cfg.get("tta") or "none"), **environment()}
        info.update(extra or {})
        atomic_write_json(out_dir / "run_info.json", info)
    for lg in loggers:
        lg.log_hyperparams(config)  # type: ignore[arg-type]
    return trainer, callbacks


def finish_run(
    trainer: L.Trainer,
    callbacks: list[L.Callback],
    values: dict[str, Any],
    out_dir: Path,
    paths: dict[str, str],
    wandb_summary: bool = True,
) -> dict[str, float]:
    """Merge the callbacks' results into ``values``; on rank 0 write ``metrics.json``, update
    the W&B summary (unless ``wandb_summary`` is false: a training run's cross-dataset cells
    leave its W&B run alone) and print the summary table. Returns the metrics (empty on other
    ranks)."""
    for cb in callbacks:
        values.update(getattr(cb, "results", {}) or {})
    if not trainer.is_global_zero:
        return {}
    skipped = values.get("efficiency/skipped_ops")
    if skipped:
        log.info("MACs do not count these operators (fvcore): %s", ", ".join(map(str, skipped)))
    metrics = write_metrics(out_dir / "metrics.json", values)
    if wandb_summary:
        update_wandb_summary(metrics)  # final test + efficiency figures in the W&B summary
    print_summary(metrics, {**paths, "run dir": str(out_dir)})
    return metrics
