"""Save and restore everything random, so a resumed run continues exactly where it stopped.

Lightning restores weights, optimizer, scheduler, loop counters and callback states (e.g.
``ModelCheckpoint``'s best score). This callback adds what it does not:

* the global RNG states (``random``, NumPy, torch CPU, CUDA when present), captured when the
  checkpoint is written and put back right before the first training batch after resuming
  (not at load time: the sanity check and loader start-up that run in between must not shift
  the streams);
* the position of the train sampler (:class:`fersuite.data.samplers.ResumableSampler`): the
  epoch and how many of its samples were consumed, so a mid-epoch resume skips exactly those.

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


def _consumed_batches(trainer: L.Trainer) -> int:
    """Train batches of the current epoch already run when a checkpoint is written.

    ``processed`` counts the batch whose ``on_train_batch_end`` is writing the checkpoint
    (Lightning counts it ``completed`` only after the hook).
    """
    return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)


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
            if sampler is not None and trainer.world_size == 1:
                loader = trainer.train_dataloader
                batch_size = int(getattr(loader, "batch_size", 0) or 0)
                consumed = _consumed_batches(trainer) * batch_size
                sampler.set_epoch(trainer.current_epoch)
                state["sampler"] = sampler.state_dict(consumed)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending_rng = state_dict.get("rng")
        self._pending_sampler = state_dict.get("sampler")

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The train loader exists now and its iterator has not drawn any index yet.
        if self._pending_sampler is None:
            return
        sampler = _train_sampler(trainer)
        if sampler is None:
            log.warning("resuming without a resumable train sampler: the epoch restarts")
        elif trainer.world_size > 1:
            log.warning(
                "mid-epoch sampler position is not restored with %d processes", trainer.world_size
            )
        else:
            sampler.load_state_dict(self._pending_sampler)
        self._pending_sampler = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._pending_rng is not None:
            restore_rng_state(self._pending_rng)
            self._pending_rng = None
