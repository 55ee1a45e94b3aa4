"""ReportCallback: confusion matrix, VA scatter and per-class table of every evaluated run.

For each stage in ``stages`` (``"test"`` by default; ``"val"`` reports the last validation
epoch at the end of fit) it writes into the run dir ``confusion_<stage>.png``,
``per_class_<stage>.csv``, ``reliability_<stage>.png`` (calibration) and, when the dataset
has valence/arousal, ``va_<stage>.png``; with a
``WandbLogger`` the images and the per-class table are also logged to W&B.

The confusion matrix is the module's own (``pl_module.confusion[stage]``, rows = true class),
so it is exactly the one behind the logged accuracy; class names come from
``pl_module.class_names``. With a ``WandbLogger``, every validation epoch (and the test) also
logs an interactive confusion matrix, the per-class table and predicted-vs-true valence/arousal
charts (:func:`fersuite.reporting.wandb_utils.log_evaluation_charts`). Predictions for the VA
scatter are captured by a forward hook on ``pl_module.net`` (no second forward pass, no change
to the module's steps); if a module's step returns an :class:`~fersuite.types.AffectOutput`,
that is used instead.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import nn

from fersuite.reporting.run_report import RunReport, VAPairs, write_run_report
from fersuite.reporting.wandb_utils import log_evaluation_charts, wandb_loggers
from fersuite.types import AffectOutput

log = logging.getLogger(__name__)

STAGES = ("val", "test")


class _StageBuffer:
    """Predictions of one evaluation epoch (CPU tensors)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.pred_class: list[torch.Tensor] = []
        self.true_class: list[torch.Tensor] = []
        self.pred_va: list[torch.Tensor] = []
        self.true_va: list[torch.Tensor] = []

    def add(self, out: AffectOutput, batch: dict[str, torch.Tensor]) -> None:
        target = batch["expression"]
        if target.ndim == 2:  # soft targets
            target = target.argmax(dim=1)
        self.pred_class.append(out.expression.detach().argmax(dim=1).cpu())
        self.true_class.append(target.detach().cpu())
        if "valence" in batch and "arousal" in batch:
            mask = batch.get("va_mask")
            if mask is None:
                mask = torch.ones_like(batch["valence"], dtype=torch.bool)
            pred = torch.stack([out.valence, out.arousal], dim=1).detach().float().clamp(-1, 1)
            true = torch.stack([batch["valence"], batch["arousal"]], dim=1).detach().float()
            self.pred_va.append(pred[mask].cpu())
            self.true_va.append(true[mask].cpu())

    def confusion(self, num_classes: int) -> torch.Tensor | None:
        if not self.pred_class:
            return None
        pred = torch.cat(self.pred_class)
        true = torch.cat(self.true_class)
        flat = true * num_classes + pred
        return torch.bincount(flat, minlength=num_classes**2).view(num_classes, num_classes)

    def va(self) -> VAPairs | None:
        if not self.pred_va:
            return None
        pred = torch.cat(self.pred_va).numpy().astype(np.float64)
        true = torch.cat(self.true_va).numpy().astype(np.float64)
        if len(true) == 0:
            return None
        return VAPairs(pred[:, 0], true[:, 0], pred[:, 1], true[:, 1])


class ReportCallback(L.Callback):
    """Per-run evaluation reports (see the module docstring).

    Args:
        output_dir: where to write; ``None`` uses ``trainer.default_root_dir``.
        stages: any of ``"val"`` and ``"test"``.
        log_to_wandb: also log images and the table to every ``WandbLogger``.
    """

    def __init__(
        self,
        output_dir: str | None = None,
        stages: Sequence[str] = ("test",),
        log_to_wandb: bool = True,
    ) -> None:
        super().__init__()
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise ValueError(f"callbacks.reports.stages has {unknown}; expected any of {STAGES}")
        self.output_dir = output_dir
        self.stages = tuple(stages)
        self.log_to_wandb = log_to_wandb
        self.buffers = {s: _StageBuffer() for s in STAGES}
        self.reports: dict[str, RunReport] = {}
        #: Scalars merged into metrics.json by fersuite-train: ``<stage>/acc_<class>``.
        self.results: dict[str, float] = {}
        self._hook: torch.utils.hooks.RemovableHandle | None = None
        self._last_out: AffectOutput | None = None
        self._active: str | None = None  # the stage whose predictions are being kept

    # -- capture -------------------------------------------------------------------------
    def _net(self, pl_module: L.LightningModule) -> nn.Module:
        net = getattr(pl_module, "net", None)
        return net if isinstance(net, nn.Module) else pl_module

    def _capture(self, module: nn.Module, args: Any, output: Any) -> None:
        self._last_out = output if isinstance(output, AffectOutput) else None

    def _captures(self, stage: str, trainer: L.Trainer) -> bool:
        """Predictions of ``stage`` are kept for a report file or for W&B's charts."""
        return stage in self.stages or (self.log_to_wandb and bool(wandb_loggers(trainer.loggers)))

    def _start(self, stage: str, pl_module: L.LightningModule) -> None:
        self.buffers[stage].reset()
        self._remove_hook()
        self._hook = self._net(pl_module).register_forward_hook(self._capture)
        self._active = stage

    def _remove_hook(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self._last_out = None
        self._active = None

    def _batch_end(self, stage: str, outputs: Any, batch: Any) -> None:
        if stage != self._active or not isinstance(batch, dict):
            return
        out = outputs if isinstance(outputs, AffectOutput) else self._last_out
        if out is not None and "expression" in batch:
            self.buffers[stage].add(out, batch)
        self._last_out = None

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and self._captures("val", trainer):
            self._start("val", pl_module)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not trainer.sanity_checking:
            self._batch_end("val", outputs, batch)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._remove_hook()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After the module's on_validation_epoch_end: its (DDP-synced) confusion is this epoch's.
        if trainer.sanity_checking or not self.log_to_wandb or not wandb_loggers(trainer.loggers):
            return
        va = self._gathered_va(trainer, pl_module, "val") if self._has_va(pl_module) else None
        self._log_charts("val", trainer, pl_module, va)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._captures("test", trainer):
            self._start("test", pl_module)

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._batch_end("test", outputs, batch)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._remove_hook()

    # -- reports ---------------------------------------------------------------------------
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if "val" in self.stages:
            self._report("val", trainer, pl_module)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # on_test_end runs after the module's on_test_epoch_end filled pl_module.confusion.
        if "test" in self.stages:
            self._report("test", trainer, pl_module)

    def _gathered_va(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> Any:
        va = self.buffers[stage].va()
        if trainer.world_size <= 1:
            return va
        if va is None:
            return None
        local = torch.as_tensor(
            np.stack([va.pred_valence, va.true_valence, va.pred_arousal, va.true_arousal], 1)
        )
        allv = pl_module.all_gather(local.to(pl_module.device)).reshape(-1, 4).cpu().numpy()
        return VAPairs(allv[:, 0], allv[:, 1], allv[:, 2], allv[:, 3])

    @staticmethod
    def _has_va(pl_module: L.LightningModule) -> bool:
        return bool(getattr(pl_module, "has_va", True))

    @rank_zero_only
    def _log_charts(
        self, stage: str, trainer: L.Trainer, pl_module: L.LightningModule, va: VAPairs | None
    ) -> None:
        confusion = getattr(pl_module, "confusion", {}).get(stage)
        if confusion is None:
            return
        names = tuple(getattr(pl_module, "class_names", ()) or ())
        if len(names) != confusion.shape[0]:
            names = tuple(f"class_{i}" for i in range(confusion.shape[0]))
        for logger in wandb_loggers(trainer.loggers):
            try:
                log_evaluation_charts(logger, stage, confusion, names, va, trainer.global_step)
            except Exception as exc:  # noqa: BLE001 - W&B must never fail a run
                log.warning("could not log the %s charts to W&B: %s", stage, exc)

    def _report(self, stage: str, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Collective (every rank). VA heads never trained (e.g. loss=ce): no VA figure.
        va = self._gathered_va(trainer, pl_module, stage) if self._has_va(pl_module) else None
        self._write(stage, trainer, pl_module, va)

    @rank_zero_only
    def _write(
        self, stage: str, trainer: L.Trainer, pl_module: L.LightningModule, va: VAPairs | None
    ) -> None:
        names = tuple(getattr(pl_module, "class_names", ()) or ())
        confusion = getattr(pl_module, "confusion", {}).get(stage)
        if confusion is None:
            num = len(names) or int(getattr(self._net(pl_module), "num_classes", 0))
            confusion = self.buffers[stage].confusion(num) if num else None
        if confusion is None:
            log.warning("no %s predictions were seen; no %s report written", stage, stage)
            return
        if not names:
            names = tuple(f"class_{i}" for i in range(confusion.shape[0]))
        out_dir = Path(self.output_dir or trainer.default_root_dir)
        reliability = getattr(pl_module, "reliability", {}).get(stage)
        report = write_run_report(out_dir, stage, confusion, names, va, reliability)
        self.reports[stage] = report
        for row in report.per_class:
            if row["support"] > 0:
                self.results[f"{stage}/acc_{row['class']}"] = float(row["accuracy"])
        if self.log_to_wandb:
            self._log_wandb(stage, trainer, report)
            if stage == "test":  # val's charts are logged every epoch (on_validation_end)
                self._log_charts(stage, trainer, pl_module, va)

    def _log_wandb(self, stage: str, trainer: L.Trainer, report: RunReport) -> None:
        for logger in wandb_loggers(trainer.loggers):
            try:
                images = {
                    "confusion": report.confusion_png,
                    "va_scatter": report.va_png,
                    "reliability": report.reliability_png,
                }
                for key, path in images.items():
                    if path is not None:
                        logger.log_image(f"reports/{key}_{stage}", images=[str(path)])
            except Exception as exc:  # noqa: BLE001
                log.warning("could not log the %s report to W&B: %s", stage, exc)
