"""EMA of the weights (``ema.decay``): Lightning's own ``EMAWeightAveraging``, with one fix.

Lightning's callback keeps an exponential moving average of every parameter and buffer
(``torch.optim.swa_utils.AveragedModel``), swaps it in for each validation epoch, writes it as
the checkpoint's ``state_dict`` (the raw weights go to ``current_model_state``) and copies it
into the model when training ends. So validation, the best/last checkpoints, the test after
fit and every export all see the EMA weights, and resuming restores both states exactly.

The fix: Lightning also calls ``on_load_checkpoint`` when ``trainer.test(ckpt_path=...)``
loads a checkpoint after fit, and would then load the *raw* weights (``current_model_state``)
into the model, so the test would evaluate the raw weights. Outside fit the checkpoint's
``state_dict`` (the EMA weights) is kept.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
from lightning.pytorch.callbacks.weight_averaging import EMAWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn

from fersuite.errors import ConfigError

__all__ = ["EMACallback", "ema_callback"]


class EMACallback(EMAWeightAveraging):
    """EMA of the module's weights, updated after every optimizer step."""

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn != TrainerFn.FITTING:
            return  # test/validate: evaluate the checkpoint's state_dict (the EMA weights)
        super().on_load_checkpoint(trainer, pl_module, checkpoint)


def ema_callback(decay: float | None = None) -> EMACallback | None:
    """The callback of ``ema.decay`` (None: off, no callback)."""
    if decay is None:
        return None
    if isinstance(decay, bool) or not isinstance(decay, int | float) or not 0.0 < decay < 1.0:
        raise ConfigError(f"ema.decay={decay!r}; expected a number in (0, 1) or null (off)")
    return EMACallback(decay=float(decay))
