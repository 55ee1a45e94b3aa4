"""``last.ckpt`` every N training steps or every T seconds, for crash-and-resume.

Configured by the top-level keys ``checkpoint.every_n_train_steps`` and
``checkpoint.train_time_interval`` (seconds); with both ``null`` it never writes (the
``model_checkpoint`` callback still writes ``last.ckpt`` after every epoch). Like that one
it is a :class:`~fersuite.callbacks.checkpointing.RunCheckpoint`: paths in a resumed state are
kept only inside its own ``dirpath``, and it deletes nothing outside it.

It never writes after a batch that validation or the epoch's end follows: Lightning resumes
such a checkpoint past that validation and those epoch-end hooks (it never runs them), so a
run killed there would skip a validation (and test another best checkpoint). The epoch-end
checkpoint, written after validation, stands in for it; a kill before that resumes from the
previous write and trains the batch again.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import lightning.pytorch as L

from fersuite.callbacks.checkpointing import RunCheckpoint


def _validation_or_epoch_end_follows(trainer: L.Trainer) -> bool:
    """The batch that just ended is the epoch's last, or validation runs right after it."""
    loop = trainer.fit_loop.epoch_loop
    if loop.batch_progress.is_last_batch:
        return True
    should_check = getattr(loop, "_should_check_val_fx", None)  # Lightning's own rule
    fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
    if should_check is None or fetcher is None:
        return False
    try:
        return bool(should_check(fetcher))
    except (AttributeError, TypeError):  # another Lightning version: epoch ends only
        return False


class PeriodicLastCheckpoint(RunCheckpoint):
    """A ``RunCheckpoint`` that only (over)writes ``<dirpath>/last.ckpt`` on a step/time clock."""

    def __init__(
        self,
        dirpath: str | None = None,
        every_n_train_steps: int | None = None,
        train_time_interval: float | None = None,
        **kwargs: Any,
    ) -> None:
        if every_n_train_steps is not None and every_n_train_steps < 1:
            raise ValueError(
                f"checkpoint.every_n_train_steps={every_n_train_steps}; expected >= 1 or null"
            )
        if train_time_interval is not None and train_time_interval <= 0:
            raise ValueError(
                f"checkpoint.train_time_interval={train_time_interval}; "
                "expected seconds > 0 or null"
            )
        if every_n_train_steps is not None and train_time_interval is not None:
            raise ValueError(
                "set checkpoint.every_n_train_steps or checkpoint.train_time_interval, not both"
            )
        super().__init__(
            dirpath=dirpath,
            monitor=None,
            save_top_k=0,
            save_last=True,
            every_n_epochs=0,  # epoch ends are model_checkpoint's job
            enable_version_counter=False,  # overwrite last.ckpt, never last-v1.ckpt
            every_n_train_steps=every_n_train_steps or 0,
            train_time_interval=(
                timedelta(seconds=float(train_time_interval)) if train_time_interval else None
            ),
            **kwargs,
        )

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if _validation_or_epoch_end_follows(trainer):
            return  # see the module doc
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
