"""Save and restore everything random, so a resumed run continues exactly where it stopped.

Lightning restores weights, optimizer, scheduler, loop counters and callback states (e.g.
``ModelCheckpoint``'s best score). This callback adds what it does not:

* the global RNG states (``random``, NumPy, torch CPU, CUDA when present), captured when the
  checkpoint is written and put back right before the first training batch after resuming
  (not at load time: the sanity check and loader start-up that run in between must not shift
  the streams);
* the position of the train sampler (:class:`fersuite.data.samplers.ResumableSampler`): the
  epoch and how many of its samples were consumed (per rank under DDP), so a mid-epoch resume
  skips exactly those. A checkpoint written once the epoch's last batch ran (the epoch-end
  ``last.ckpt``) stores the start of the next epoch.

The sampler position is handed to the datamodule as soon as the checkpoint is loaded, so the
train sampler starts at the right epoch and sample when it is built: Lightning creates the
loader's iterator before the first epoch hook, and a loader with worker processes draws its
first indices then. (Applying it later, in ``on_train_start``, made a resumed epoch replay the
order of epoch 0 whenever ``data.num_workers > 0``.)

Everything is stored as plain data, readable with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch

log = logging.getLogger(__name__)


def capture_rng_state() -> dict[str, Any]:
    """The global RNG states as plain data (tensors, ints, lists)."""
    py = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        (
            n["kind"],
            n["keys"].numpy().astype(np.uint32),
            int(n["pos"]),
            int(n["has_gauss"]),
            float(n["cached"]),
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = list(state["cuda"])
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            log.warning(
                "checkpoint holds CUDA RNG states for %d devices, this run has %d; "
                "CUDA randomness will differ from the interrupted run",
                len(cuda),
                torch.cuda.device_count(),
            )


def _train_sampler(trainer: L.Trainer) -> Any:
    loader = trainer.train_dataloader
    if loader is None:
        return None
    sampler = getattr(loader, "sampler", None)
    return sampler if hasattr(sampler, "load_state_dict") and hasattr(sampler, "order") else None


def _train_position(trainer: L.Trainer) -> tuple[int, int, bool]:
    """When a checkpoint is written: the epoch last started, how many of its train batches
    ran, and whether that was all of them.

    The epoch is the last one *started*: ``trainer.current_epoch`` already counts an epoch
    as done in its ``on_train_epoch_end`` and after ``fit`` ends. ``processed`` counts the
    batch whose ``on_train_batch_end`` is writing the checkpoint (Lightning counts it
    ``completed`` only after the hook).
    """
    epoch = max(0, int(trainer.fit_loop.epoch_progress.current.started) - 1)
    progress = trainer.fit_loop.epoch_loop.batch_progress
    done = int(progress.current.processed)
    finished = bool(progress.is_last_batch) or done >= trainer.num_training_batches
    return epoch, done, finished


class RNGStateCallback(L.Callback):
    """Checkpoints the global RNG states and the train sampler position (see module doc)."""

    def __init__(self) -> None:
        self._pending_rng: dict[str, Any] | None = None
        self._pending_sampler: dict[str, int] | None = None

    @property
    def state_key(self) -> str:
        return "fersuite.RNGState"

    def state_dict(self) -> dict[str, Any]:
        trainer: L.Trainer | None = getattr(self, "_trainer", None)
        state: dict[str, Any] = {"rng": capture_rng_state()}
        if trainer is not None:
            sampler = _train_sampler(trainer)
            if sampler is not None:
                loader = trainer.train_dataloader
                batch_size = int(getattr(loader, "batch_size", 0) or 0)
                epoch, batches, finished = _train_position(trainer)
                sampler.set_epoch(epoch)
                state["sampler"] = sampler.state_dict(batches * batch_size, finished=finished)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending_rng = state_dict.get("rng")
        self._pending_sampler = state_dict.get("sampler")
        # Lightning loads callback states before it builds the train loader (unless the
        # strategy restores after setup): hand the position to the datamodule, which gives it
        # to the sampler it builds.
        trainer: L.Trainer | None = getattr(self, "_trainer", None)
        if trainer is None or trainer.train_dataloader is not None:
            return
        datamodule = getattr(trainer, "datamodule", None)
        if self._pending_sampler is not None and hasattr(datamodule, "resume_train_sampler"):
            datamodule.resume_train_sampler(self._pending_sampler)
            self._pending_sampler = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Fallback for loaders that do not come from an AffectDataModule.
        if self._pending_sampler is None:
            return
        sampler = _train_sampler(trainer)
        loader = trainer.train_dataloader
        if sampler is None:
            log.warning("resuming without a resumable train sampler: the epoch restarts")
        else:
            sampler.load_state_dict(self._pending_sampler)
            if int(getattr(loader, "num_workers", 0) or 0) > 0:
                log.warning(
                    "train loader not built by a fersuite datamodule: its workers may already "
                    "hold indices from before the resume position"
                )
        self._pending_sampler = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._pending_rng is not None:
            restore_rng_state(self._pending_rng)
            self._pending_rng = None
