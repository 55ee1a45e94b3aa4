"""Training, the recipe: prepare the run (:mod:`fersuite.runs.setup`), fit, test the best
checkpoint (or hand ``train=false ckpt_path=...`` to :func:`fersuite.evaluation.evaluate`), and
finish with ``metrics.json`` and the summary table.

``datasets=[<name>,...]``: the checkpoint the test used is then tested on each of those test
sets (:func:`fersuite.evaluation.cross_evaluate_run`): ``cross_dataset.csv`` /
``cross_dataset.png`` in the run dir and ``cross/<dataset>/<metric>`` in ``metrics.json``. The
names (and the test sets they compose to) are checked before anything is trained.

:func:`train` holds the run dir's lock (:mod:`fersuite.runs.lock`) while it writes there.
Ctrl-C during fit prints the command that resumes the run and exits with status 130.
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

from hydra.utils import instantiate
from omegaconf import DictConfig

from fersuite.callbacks.checkpointing import best_checkpoint
from fersuite.config import current_overrides
from fersuite.evaluation import (
    cross_evaluate_run,
    evaluate,
    training_test_sets,
    wants_checkpoint_eval,
)
from fersuite.runs import lock
from fersuite.runs.builders import (
    build_module,
    checkpoint_metadata,
)
from fersuite.runs.resume import (
    IGNORED_PREFIXES,
    LAST,
    FitMetrics,
    Resumed,
)
from fersuite.runs.setup import finish_run, make_trainer, prepare

__all__ = ["INTERRUPTED_STATUS", "resume_command", "train"]

log = logging.getLogger("fersuite.train")


def train(cfg: DictConfig) -> dict[str, float]:
    """Train and test one configuration; return its final metrics.

    ``train=false ckpt_path=<file>`` is an alias of ``fersuite-eval``
    (:func:`fersuite.evaluation.evaluate`)."""
    if wants_checkpoint_eval(cfg):
        return evaluate(cfg)
    test_sets = training_test_sets(cfg)  # a bad name: one line, before anything is written
    out_dir, resumed = prepare(cfg, resume=True, take_lock=True)
    try:
        return _train(cfg, out_dir, resumed, test_sets)
    finally:
        lock.release(out_dir)


def _train(
    cfg: DictConfig,
    out_dir: Path,
    resumed: Resumed | None,
    test_sets: dict[str, DictConfig] | None = None,
) -> dict[str, float]:
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
    tested: str | None = None
    if cfg.get("test", True):
        # After fit: the best checkpoint; train=false ckpt_path=last: that one.
        ckpt = (best or None) if fitting else cfg.get("ckpt_path")
        trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
        values.update(trainer.callback_metrics)
        tested = str(trainer.ckpt_path) if trainer.ckpt_path else None  # the file it loaded
    if test_sets and trainer.is_global_zero:
        values.update(_cross_evaluate(cfg, out_dir, tested, test_sets))
    return finish_run(trainer, callbacks, values, out_dir, {"checkpoint": best or "(none)"})


def _cross_evaluate(
    cfg: DictConfig, out_dir: Path, tested: str | None, test_sets: dict[str, DictConfig]
) -> dict[str, float]:
    """``datasets``: the checkpoint the test loaded on each test set (``cross/*`` figures);
    without such a checkpoint, one line saying that nothing was cross-evaluated."""
    names = ",".join(test_sets)
    if not cfg.get("test", True):
        why = "test=false: the run was not tested"
    elif tested is None or not Path(tested).is_file():
        why = "the test ran on the weights in memory, not on a checkpoint file"
    else:
        return cross_evaluate_run(cfg, tested, test_sets, out_dir)
    print(f"datasets=[{names}]: nothing was cross-evaluated ({why})", flush=True)
    return {}


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
