"""Stop (or skip) a training step whose loss or gradients are not finite.

Configured by ``trainer_guard.on_nonfinite`` (``stop`` | ``skip``) and
``trainer_guard.max_skips``. The check runs after the backward pass and before the optimizer
updates the weights, so a non-finite step never reaches the weights. The message names the
global step, the batch's dataset indices (``batch["index"]``) and the loss terms that went
non-finite (``loss_ce``, ``loss_valence``, ``loss_arousal``, ... as stashed by the module in
``last_loss_terms``). Checkpoints are never written with non-finite weights.

Mixed precision: with a gradient scaler (fp16, ``16-mixed``) Lightning unscales the gradients
before this check, and the scaler itself skips a step whose gradients overflowed (and lowers its
scale). Such steps are the scaler's normal operation, not failures: they are left to it and
counted as ``guard/amp_overflow_steps``. A non-finite *loss* is caught in every precision;
non-finite gradients are failures when no enabled scaler is in use (``32-true``, ``bf16-mixed``).
The whole check reads one value back from the device per step.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as L
import torch

from fersuite.errors import NonFiniteError

log = logging.getLogger(__name__)

ACTIONS = ("stop", "skip")


def _finite(value: Any) -> torch.Tensor | None:
    """A 0-dim bool tensor (on the value's device): all of ``value`` is finite; None: no floats."""
    v = value.detach() if isinstance(value, torch.Tensor) else torch.as_tensor(value)
    return torch.isfinite(v).all() if v.is_floating_point() else None


def _stacked(flags: list[torch.Tensor]) -> torch.Tensor:
    """The flags in one tensor, on an accelerator if any flag lives there (no host reads)."""
    device = next((f.device for f in flags if f.device.type != "cpu"), torch.device("cpu"))
    return torch.stack([f.to(device) for f in flags])


def _bad_names(names: list[str], flags: list[torch.Tensor]) -> list[str]:
    """The names whose flag is False (one host read for all of them)."""
    if not flags:
        return []
    ok = _stacked(flags).tolist()
    return [name for name, good in zip(names, ok, strict=True) if not good]


def nonfinite_terms(terms: dict[str, Any] | None) -> list[str]:
    """Names of the loss terms whose value is NaN or infinite."""
    checked = [(name, _finite(value)) for name, value in (terms or {}).items()]
    pairs = [(name, flag) for name, flag in checked if flag is not None]
    return _bad_names([n for n, _ in pairs], [f for _, f in pairs])


def nonfinite_grads(module: torch.nn.Module, limit: int = 5) -> list[str]:
    """Names of (up to ``limit``) parameters whose gradient holds NaN or inf."""
    grads = [(name, p.grad) for name, p in module.named_parameters() if p.grad is not None]
    return _bad_names([n for n, _ in grads], [torch.isfinite(g).all() for _, g in grads])[:limit]


def active_grad_scaler(trainer: Any) -> Any:
    """The enabled ``GradScaler`` of the trainer's precision plugin, else None."""
    scaler = getattr(getattr(trainer, "precision_plugin", None), "scaler", None)
    if scaler is None:
        return None
    enabled = getattr(scaler, "is_enabled", None)
    return scaler if enabled is None or enabled() else None


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
        self.amp_overflows = 0
        self._batch: Any = None

    @property
    def state_key(self) -> str:
        return "fersuite.NonFiniteGuard"

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped, "amp_overflows": self.amp_overflows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))
        self.amp_overflows = int(state_dict.get("amp_overflows", 0))

    @property
    def results(self) -> dict[str, float]:
        """Merged into ``metrics.json`` by ``fersuite-train``."""
        return {
            "guard/skipped_steps": float(self.skipped),
            "guard/amp_overflow_steps": float(self.amp_overflows),
        }

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch = batch

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        terms = {
            name: flag
            for name, value in (getattr(pl_module, "last_loss_terms", None) or {}).items()
            if (flag := _finite(value)) is not None
        }
        grads = [(n, p.grad) for n, p in pl_module.named_parameters() if p.grad is not None]
        flags = [*terms.values(), *(torch.isfinite(g).all() for _, g in grads)]
        if not flags:
            return
        # The one host-device sync of the step; names are looked up only when something is off.
        if bool(_stacked(flags).all()):
            return
        bad_terms = _bad_names(list(terms), list(terms.values()))
        if not bad_terms and active_grad_scaler(trainer) is not None:
            # A gradient overflow under fp16: the scaler skips this step and lowers its scale.
            self.amp_overflows += 1
            return
        bad_grads = [] if bad_terms else _bad_names([n for n, _ in grads], flags[len(terms) :])[:5]
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
