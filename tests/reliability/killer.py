"""Test-only callback: SIGKILL this process at a known training step.

Listed in every run of the kill/resume test (so their overrides match); it acts only when
``FERSUITE_TEST_KILL_AT_STEP`` is set, and it never touches any RNG.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import lightning.pytorch as L

ENV = "FERSUITE_TEST_KILL_AT_STEP"


class KillAtStep(L.Callback):
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        step = os.environ.get(ENV)
        if step is not None and trainer.global_step == int(step):
            os.kill(os.getpid(), signal.SIGKILL)
