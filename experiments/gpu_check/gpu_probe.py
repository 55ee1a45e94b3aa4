"""A Lightning callback the GPU check adds to each training job (``+callbacks.gpu_probe``).

It writes one JSON file at the end of ``fit`` (rank 0): training steps and images per second
over the steps after ``skip_steps`` (compilation, cuDNN autotuning and allocator warm-up
excluded). The clock runs from the first timed step of an epoch to the end of its last training
step (data loading between steps included; validation, which Lightning runs before
``on_train_epoch_end``, excluded); the device is synchronised only at those two points.
Also: whether every training loss was finite (checked on the device, read once at the end),
the last loss, the peak CUDA memory of rank 0 and the gradient scaler's scale (fp16 only).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class GpuProbe(L.Callback):
    def __init__(self, path: str, skip_steps: int = 20) -> None:
        self.path = Path(path)
        self.skip_steps = int(skip_steps)
        self.steps = 0  # every training step seen
        self.timed_steps = 0
        self.timed_images = 0
        self.elapsed = 0.0
        self._t0: float | None = None
        self._finite: torch.Tensor | None = None
        self._last: torch.Tensor | None = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.steps >= self.skip_steps and self._t0 is None:
            _sync()
            self._t0 = time.perf_counter()

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self.steps += 1
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            ok = torch.isfinite(loss.detach()).all()
            self._finite = ok if self._finite is None else self._finite & ok
            self._last = loss.detach()
        if self._t0 is not None:
            self.timed_steps += 1
            images = batch["image"] if isinstance(batch, dict) else batch[0]
            self.timed_images += int(images.shape[0]) * trainer.world_size
            if batch_idx + 1 >= trainer.num_training_batches:  # the epoch's last step
                self._stop_clock()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop_clock()  # in case the last step was not recognised

    def _stop_clock(self) -> None:
        if self._t0 is not None:
            _sync()
            self.elapsed += time.perf_counter() - self._t0
            self._t0 = None

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        last = float(self._last.float().item()) if self._last is not None else None
        record = {
            "steps": self.steps,
            "timed_steps": self.timed_steps,
            "seconds": self.elapsed,
            "steps_per_s": self.timed_steps / self.elapsed if self.elapsed > 0 else None,
            "images_per_s": self.timed_images / self.elapsed if self.elapsed > 0 else None,
            "loss_finite": bool(self._finite.item()) if self._finite is not None else None,
            "last_loss": last if last is None or math.isfinite(last) else str(last),
            "peak_memory_mb": (
                torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
            ),
            "precision": str(trainer.precision),
            "world_size": trainer.world_size,
            "grad_scale": float(scaler.get_scale()) if scaler is not None else None,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(record, indent=2) + "\n")
