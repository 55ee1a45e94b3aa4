"""Test-only callback: SIGKILL this process at a known training step or at a named point.

Listed in every run of the kill/resume tests (so their overrides match); it acts only when
``FERSUITE_TEST_KILL_AT_STEP`` (a global step, at the start of that training batch) or
``FERSUITE_TEST_KILL_AT`` (one of :data:`POINTS`) is set, and it never touches any RNG.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as L

ENV = "FERSUITE_TEST_KILL_AT_STEP"
POINT_ENV = "FERSUITE_TEST_KILL_AT"
#: The named kill points, in the order a run passes them:
#: final_val: in the last epoch's validation (after its last periodic last.ckpt, before the
#: validation ends); train_end: right after the last checkpoint write of fit (on_train_end);
#: test_start: between fit and test (after what the run writes once fit returns);
#: test: during test (after its first batch); metrics: while metrics.json is written (the
#: temporary file complete, before its rename).
POINTS = ("final_val", "train_end", "test_start", "test", "metrics")
#: Printed on stderr right before the kill, so a test knows which point killed the run.
MARK = "killer: SIGKILL at "


def _kill(point: str) -> None:
    print(f"{MARK}{point}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


class KillAtStep(L.Callback):
    def __init__(self) -> None:
        self.point = os.environ.get(POINT_ENV) or None
        if self.point is not None and self.point not in POINTS:
            raise ValueError(f"{POINT_ENV}={self.point!r}; expected one of {POINTS}")

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        step = os.environ.get(ENV)
        if step is not None and trainer.global_step == int(step):
            _kill(f"step {step}")

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        epochs = trainer.max_epochs
        last_epoch = epochs is not None and trainer.current_epoch + 1 >= epochs
        if self.point == "final_val" and not trainer.sanity_checking and last_epoch:
            _kill(self.point)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.point == "train_end":
            _kill(self.point)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.point == "test_start":
            _kill(self.point)
        if self.point == "metrics":
            _kill_on_rename_of("metrics.json")

    def on_test_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if self.point == "test":
            _kill(self.point)


def _kill_on_rename_of(name: str) -> None:
    """SIGKILL when a file is renamed onto ``name`` (an atomic write's last step)."""
    real = os.replace

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if Path(os.fsdecode(dst)).name == name:
            assert Path(os.fsdecode(src)).is_file()
            _kill(f"metrics (before renaming {Path(os.fsdecode(src)).name})")
        real(src, dst, *args, **kwargs)

    os.replace = replace  # type: ignore[assignment]
