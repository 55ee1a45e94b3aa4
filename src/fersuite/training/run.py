"""A run from a composed config: every config change before it starts (:func:`prepare_run`),
the trainer with its callbacks and loggers (:func:`make_trainer`), fit and test
(:func:`train`), and ``metrics.json`` plus the summary table at the end (:func:`finish_run`).

:func:`train` holds the run dir's lock (:mod:`fersuite.training.lock`) while it writes there.
Ctrl-C during fit prints the command that resumes the run and exits with status 130.

``fersuite-eval`` (:func:`fersuite.evaluation.evaluate`) uses the same pieces without fit.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import lightning.pytorch as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from fersuite.callbacks.checkpointing import best_checkpoint
from fersuite.config import current_overrides, validate_config
from fersuite.reporting.wandb_utils import update_wandb_summary
from fersuite.resume import (
    IGNORED_PREFIXES,
    LAST,
    ApplyOptimizerConfig,
    FitMetrics,
    Resumed,
    prepare_resume,
    read_wandb_id,
    remember_wandb_id,
)
from fersuite.training import lock
from fersuite.training.builders import (
    build_callbacks,
    build_loggers,
    build_module,
    build_plugins,
    checkpoint_metadata,
)
from fersuite.utils.io import atomic_write_json, remove_stale_tmp
from fersuite.utils.run_info import environment, print_summary, write_metrics

__all__ = ["finish_run", "make_trainer", "prepare_run", "train"]

log = logging.getLogger("fersuite.train")


def prepare_run(cfg: DictConfig, resume: bool = True) -> tuple[Path, str | None]:
    """The config changes of a run, in one place, before anything is built: the output dir
    (the Hydra run dir, else the working dir), validation, resume (``resume=auto`` /
    ``ckpt_path``; may switch ``paths.output_dir``) and the seed.

    Returns the run dir and the checkpoint to resume from (None: a fresh run)."""
    out_dir, resumed = _prepare(cfg, resume=resume, take_lock=False)
    return out_dir, resumed.ckpt_path if resumed else None


def _prepare(cfg: DictConfig, resume: bool, take_lock: bool) -> tuple[Path, Resumed | None]:
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
    fit's figures (:class:`~fersuite.resume.FitMetrics`, one of the callbacks)."""
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
) -> dict[str, float]:
    """Merge the callbacks' results into ``values``; on rank 0 write ``metrics.json``, update
    the W&B summary and print the summary table. Returns the metrics (empty on other ranks)."""
    for cb in callbacks:
        values.update(getattr(cb, "results", {}) or {})
    if not trainer.is_global_zero:
        return {}
    skipped = values.get("efficiency/skipped_ops")
    if skipped:
        log.info("MACs do not count these operators (fvcore): %s", ", ".join(map(str, skipped)))
    metrics = write_metrics(out_dir / "metrics.json", values)
    update_wandb_summary(metrics)  # final test + efficiency figures in the W&B summary
    print_summary(metrics, {**paths, "run dir": str(out_dir)})
    return metrics


def train(cfg: DictConfig) -> dict[str, float]:
    """Train and test one configuration; return its final metrics.

    ``train=false ckpt_path=<file>`` is an alias of ``fersuite-eval``
    (:func:`fersuite.evaluation.evaluate`)."""
    from fersuite.evaluation import evaluate, wants_checkpoint_eval

    if wants_checkpoint_eval(cfg):
        return evaluate(cfg)
    out_dir, resumed = _prepare(cfg, resume=True, take_lock=True)
    try:
        return _train(cfg, out_dir, resumed)
    finally:
        lock.release(out_dir)


def _train(cfg: DictConfig, out_dir: Path, resumed: Resumed | None) -> dict[str, float]:
    ckpt_path = resumed.ckpt_path if resumed is not None else None
    datamodule = instantiate(cfg.data)
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        # The data is read (and its errors reported) before any logger, W&B included, starts:
        # a run that never started leaves no logger run behind. Lightning's own calls reuse it.
        datamodule.prepare_data()
        datamodule.setup("fit")
    module = build_module(cfg, datamodule)
    module.checkpoint_meta = checkpoint_metadata(
        cfg, datamodule, has_va=getattr(module, "has_va", None)
    )
    trainer, callbacks = make_trainer(cfg, out_dir, resumed=resumed)

    fitting = bool(cfg.get("train", True))
    if fitting:
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        except (KeyboardInterrupt, SystemExit) as exc:
            # Lightning answers Ctrl-C during fit with sys.exit(1) (and ignores SIGINT after)
            if isinstance(exc, KeyboardInterrupt) or (trainer.interrupted and exc.code == 1):
                _interrupted(out_dir)
            raise
    # The fit's figures: those of the resumed checkpoint, updated by what fit logged since;
    # a run killed after its last checkpoint resumes with nothing to fit and keeps them all.
    kept = next((cb.restored for cb in callbacks if isinstance(cb, FitMetrics)), {})
    values: dict[str, Any] = {**(kept if fitting else {}), **trainer.callback_metrics}
    # Only a checkpoint file inside the callback's own folder (a resumed state is a file).
    best = best_checkpoint(trainer.checkpoint_callback)
    if cfg.get("test", True):
        # After fit: the best checkpoint; train=false ckpt_path=last: that one.
        ckpt = (best or None) if fitting else cfg.get("ckpt_path")
        trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
        values.update(trainer.callback_metrics)
    return finish_run(trainer, callbacks, values, out_dir, {"checkpoint": best or "(none)"})


#: The exit status of a run stopped with Ctrl-C (128 + SIGINT, as a shell reports it).
INTERRUPTED_STATUS = 130


def resume_command(out_dir: Path) -> str:
    """The command line that resumes the run in ``out_dir``: this run's overrides (without
    resume, ckpt_path and hydra.*) and ``resume=<run dir>``."""
    overrides = current_overrides()
    kept = [o for o in overrides or [] if not o.lstrip("+~").startswith(IGNORED_PREFIXES)]
    args = [*kept, f"resume={out_dir.resolve()}"]
    return "fersuite-train " + " ".join(shlex.quote(a) for a in args)


def _interrupted(out_dir: Path) -> None:
    """Ctrl-C: say how to resume (one line on stderr) and end with status 130."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning set SIG_IGN
    if (out_dir / LAST).is_file():
        line = f"interrupted; resume with: {resume_command(out_dir)}"
    else:
        line = f"interrupted before the first checkpoint; nothing to resume in {out_dir}"
    print(f"fersuite-train: {line}", file=sys.stderr, flush=True)
    raise SystemExit(INTERRUPTED_STATUS)
