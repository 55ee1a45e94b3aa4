"""Stop (or skip) a training step whose loss or gradients are not finite.

Configured by ``trainer_guard.on_nonfinite`` (``stop`` | ``skip``) and
``trainer_guard.max_skips``. The check runs after the backward pass and before the optimizer
updates the weights, so a non-finite step never reaches the weights. The message names the
global step, the batch's dataset indices (``batch["index"]``) and the loss terms that went
non-finite (``loss_ce``, ``loss_valence``, ``loss_arousal``, ... as stashed by the module in
``last_loss_terms``). Checkpoints are never written with non-finite weights.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as L
import torch

log = logging.getLogger(__name__)

ACTIONS = ("stop", "skip")


class NonFiniteError(RuntimeError):
    """Training met a non-finite loss, gradient or weight."""


def nonfinite_terms(terms: dict[str, Any] | None) -> list[str]:
    """Names of the loss terms whose value is NaN or infinite."""
    bad = []
    for name, value in (terms or {}).items():
        v = value.detach() if isinstance(value, torch.Tensor) else torch.as_tensor(value)
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            bad.append(name)
    return bad


def nonfinite_grads(module: torch.nn.Module, limit: int = 5) -> list[str]:
    """Names of (up to ``limit``) parameters whose gradient holds NaN or inf."""
    grads = [(name, p.grad) for name, p in module.named_parameters() if p.grad is not None]
    if not grads:
        return []
    # One host-device sync per step (not one per parameter): names are looked up only on failure.
    finite = torch.stack([torch.isfinite(g).all().to(grads[0][1].device) for _, g in grads])
    if bool(finite.all()):
        return []
    flags = finite.tolist()
    return [name for (name, _), ok in zip(grads, flags, strict=True) if not ok][:limit]


def _describe_indices(batch: Any, limit: int = 16) -> str:
    idx = batch.get("index") if isinstance(batch, dict) else None
    if not isinstance(idx, torch.Tensor):
        return "unknown (the batch has no 'index')"
    values = idx.detach().flatten().cpu().tolist()
    shown = ", ".join(str(v) for v in values[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}]"


class NonFiniteGuard(L.Callback):
    """See module doc. ``skipped`` counts the skipped steps of this run."""

    def __init__(self, on_nonfinite: str = "stop", max_skips: int = 10) -> None:
        if on_nonfinite not in ACTIONS:
            raise ValueError(
                f"trainer_guard.on_nonfinite={on_nonfinite!r}; expected one of {', '.join(ACTIONS)}"
            )
        if max_skips < 0:
            raise ValueError(f"trainer_guard.max_skips={max_skips}; expected >= 0")
        self.on_nonfinite = on_nonfinite
        self.max_skips = int(max_skips)
        self.skipped = 0
        self._batch: Any = None

    @property
    def state_key(self) -> str:
        return "fersuite.NonFiniteGuard"

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))

    @property
    def results(self) -> dict[str, float]:
        """Merged into ``metrics.json`` by ``fersuite-train``."""
        return {"guard/skipped_steps": float(self.skipped)}

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch = batch

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        terms = getattr(pl_module, "last_loss_terms", None)
        bad_terms = nonfinite_terms(terms)
        bad_grads = [] if bad_terms else nonfinite_grads(pl_module)
        if not bad_terms and not bad_grads:
            return
        what = (
            f"loss term(s) {', '.join(bad_terms)}"
            if bad_terms
            else f"gradient(s) of {', '.join(bad_grads)}"
        )
        where = (
            f"non-finite {what} at step {trainer.global_step} (epoch {trainer.current_epoch}), "
            f"batch indices {_describe_indices(self._batch)}"
        )
        if self.on_nonfinite == "stop":
            raise NonFiniteError(
                f"{where}; stopping (trainer_guard.on_nonfinite=skip skips such steps)"
            )
        self.skipped += 1
        if self.skipped > self.max_skips:
            raise NonFiniteError(
                f"{where}; {self.skipped} non-finite steps exceed "
                f"trainer_guard.max_skips={self.max_skips}"
            )
        log.warning("%s; step skipped (%d/%d)", where, self.skipped, self.max_skips)
        # No gradients: the optimizer leaves every parameter (and its moments) untouched.
        optimizer.zero_grad(set_to_none=True)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Weights and buffers only: metric states (e.g. a running max starting at -inf) may be
        # legitimately infinite.
        weights = {n for n, _ in pl_module.named_parameters()}
        weights |= {n for n, _ in pl_module.named_buffers()}
        for name, value in checkpoint.get("state_dict", {}).items():
            if (
                name in weights
                and isinstance(value, torch.Tensor)
                and value.is_floating_point()
                and not bool(torch.isfinite(value).all())
            ):
                raise NonFiniteError(
                    f"refusing to write a checkpoint at step {trainer.global_step}: weight "
                    f"{name} is not finite"
                )
