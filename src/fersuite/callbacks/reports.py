"""ReportCallback: confusion matrix, VA scatter and per-class table of every evaluated run.

For each stage in ``stages`` (``"test"`` by default; ``"val"`` reports the last validation
epoch at the end of fit) it writes into the run dir ``confusion_<stage>.png``,
``per_class_<stage>.csv``, ``reliability_<stage>.png`` (calibration) and, when the dataset
has valence/arousal, ``va_<stage>.png``; with a
``WandbLogger`` the images and the per-class table are also logged to W&B. The test stage
also writes ``predictions_test.csv``: one row per test sample, in test-set order, with its
index in the test split, target, prediction, class probabilities and valence/arousal
(:func:`fersuite.reporting.run_report.write_predictions`; under DDP every rank's rows are
gathered and the samples a distributed sampler repeats to pad the ranks' shares kept once).

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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import nn

from fersuite.reporting.run_report import (
    PREDICTIONS_FILE,
    Predictions,
    RunReport,
    VAPairs,
    write_predictions,
    write_run_report,
)
from fersuite.reporting.wandb_utils import log_evaluation_charts, wandb_loggers
from fersuite.types import AffectOutput

log = logging.getLogger(__name__)

STAGES = ("val", "test")


class _StageBuffer:
    """Predictions of one evaluation epoch (CPU tensors).

    With ``rows`` (the test stage) each sample's row is kept too: ``ints`` (n, 3) = index,
    target, prediction and ``floats`` (n, K + 4) = the softmax probabilities, predicted
    valence/arousal and their targets (NaN where there are none), one transfer each per batch.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.pred_class: list[torch.Tensor] = []
        self.true_class: list[torch.Tensor] = []
        self.pred_va: list[torch.Tensor] = []
        self.true_va: list[torch.Tensor] = []
        self.ints: list[torch.Tensor] = []
        self.floats: list[torch.Tensor] = []

    def add(
        self,
        out: AffectOutput,
        batch: dict[str, torch.Tensor],
        rows: bool = False,
        has_va: bool = True,
    ) -> None:
        target = batch["expression"]
        if target.ndim == 2:  # soft targets
            target = target.argmax(dim=1)
        index = batch.get("index") if rows else None
        if index is not None:
            self._add_rows(out, batch, target, index, has_va)
            return
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

    def _add_rows(
        self,
        out: AffectOutput,
        batch: dict[str, torch.Tensor],
        target: torch.Tensor,
        index: torch.Tensor,
        has_va: bool,
    ) -> None:
        logits = out.expression.detach()
        n = logits.shape[0]
        ints = torch.stack(
            [index.detach().view(-1).long(), target.detach().long(), logits.argmax(1)], 1
        )
        nan = torch.full((n, 2), float("nan"), device=logits.device)
        # The scored values: VA clamped as AffectMetrics clamps them; targets where valid.
        pred_va = nan
        true_va = nan
        if has_va:
            pred_va = torch.stack([out.valence, out.arousal], 1).detach().float().clamp(-1, 1)
            if "valence" in batch and "arousal" in batch:
                true = torch.stack([batch["valence"], batch["arousal"]], 1).detach().float()
                mask = batch.get("va_mask")
                true_va = true if mask is None else torch.where(mask.view(-1, 1), true, nan)
        floats = torch.cat([logits.float().softmax(dim=1), pred_va, true_va], dim=1)
        ints = ints.cpu()
        self.ints.append(ints)
        self.floats.append(floats.cpu())
        self.true_class.append(ints[:, 1])
        self.pred_class.append(ints[:, 2])

    def rows(self, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(ints, floats) of every kept row (empty tensors when none)."""
        if not self.ints:
            return torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, num_classes + 4)
        return torch.cat(self.ints), torch.cat(self.floats)

    def confusion(self, num_classes: int) -> torch.Tensor | None:
        if not self.pred_class:
            return None
        pred = torch.cat(self.pred_class)
        true = torch.cat(self.true_class)
        flat = true * num_classes + pred
        return torch.bincount(flat, minlength=num_classes**2).view(num_classes, num_classes)

    def va(self) -> VAPairs | None:
        if self.floats:  # rows kept: predicted v, a and true v, a are the last four columns
            last = torch.cat(self.floats)[:, -4:].numpy().astype(np.float64)
            last = last[np.isfinite(last).all(axis=1)]
            if len(last) == 0:
                return None
            return VAPairs(last[:, 0], last[:, 2], last[:, 1], last[:, 3])
        if not self.pred_va:
            return None
        pred = torch.cat(self.pred_va).numpy().astype(np.float64)
        true = torch.cat(self.true_va).numpy().astype(np.float64)
        if len(true) == 0:
            return None
        return VAPairs(pred[:, 0], true[:, 0], pred[:, 1], true[:, 1])


def gather_rows(
    all_gather: Callable[[torch.Tensor], torch.Tensor], local: torch.Tensor, world_size: int
) -> torch.Tensor:
    """Every rank's ``local`` rows (n_rank, ...) concatenated in rank order, on every rank.

    A collective: every rank calls it. Ranks may hold different numbers of rows: each pads
    its rows to the longest, ``all_gather`` (e.g. ``LightningModule.all_gather``: a tensor
    → (world_size, ...) on every rank) sends them, and the padding is cut off again.
    """
    if world_size <= 1:
        return local
    sizes = all_gather(torch.tensor(local.shape[0], device=local.device)).view(-1).tolist()
    padded = local.new_zeros((max(sizes), *local.shape[1:]))
    padded[: local.shape[0]] = local
    everything = all_gather(padded)
    return torch.cat([everything[rank, :size] for rank, size in enumerate(sizes)])


def predictions_from_rows(
    ints: torch.Tensor, floats: torch.Tensor, class_names: Sequence[str]
) -> Predictions:
    """The rows of :class:`_StageBuffer` (gathered from every rank) as :class:`Predictions`,
    sorted by sample index and each sample once."""
    k = len(class_names)
    i = ints.cpu().numpy().astype(np.int64)
    f = floats.cpu().numpy().astype(np.float64)
    va = [f[:, k + j] for j in range(4)]
    return Predictions(i[:, 0], i[:, 1], i[:, 2], f[:, :k], tuple(class_names), *va).unique()


def _va_pairs(p: Predictions) -> VAPairs | None:
    v, a, vt, at = p.va_columns()
    if v is None or a is None or vt is None or at is None:
        return None
    keep = np.isfinite(v) & np.isfinite(a) & np.isfinite(vt) & np.isfinite(at)
    if not keep.any():
        return None
    return VAPairs(v[keep], vt[keep], a[keep], at[keep])


class ReportCallback(L.Callback):
    """Per-run evaluation reports (see the module docstring).

    Args:
        output_dir: where to write; ``None`` uses ``trainer.default_root_dir``.
        stages: any of ``"val"`` and ``"test"``.
        log_to_wandb: also log images and the table to every ``WandbLogger``.
        plots: draw the PNG figures (confusion matrix, valence/arousal scatter, reliability);
            ``False`` writes the CSV files and metrics only (e.g. the jobs of a long search).
    """

    def __init__(
        self,
        output_dir: str | None = None,
        stages: Sequence[str] = ("test",),
        log_to_wandb: bool = True,
        plots: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(plots, bool):
            raise ValueError(f"callbacks.reports.plots={plots!r}; expected true or false")
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise ValueError(f"callbacks.reports.stages has {unknown}; expected any of {STAGES}")
        self.output_dir = output_dir
        self.stages = tuple(stages)
        self.log_to_wandb = log_to_wandb
        self.plots = plots
        self.buffers = {s: _StageBuffer() for s in STAGES}
        self.reports: dict[str, RunReport] = {}
        #: Scalars merged into metrics.json by fersuite-train: ``<stage>/acc_<class>``.
        self.results: dict[str, float] = {}
        self._hook: torch.utils.hooks.RemovableHandle | None = None
        self._last_out: AffectOutput | None = None
        self._active: str | None = None  # the stage whose predictions are being kept
        self._has_va_now = True
        #: The last test's per-sample predictions (rank 0), as written to predictions_test.csv.
        self.predictions: Predictions | None = None

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
        self._has_va_now = self._has_va(pl_module)

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
            rows = stage == "test" and stage in self.stages
            self.buffers[stage].add(out, batch, rows=rows, has_va=self._has_va_now)
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
        # Every rank takes part, also one without VA pairs (each rank has its own count).
        local = torch.zeros(0, 4, dtype=torch.float64)
        if va is not None:
            local = torch.as_tensor(
                np.stack([va.pred_valence, va.true_valence, va.pred_arousal, va.true_arousal], 1)
            )
        gathered = gather_rows(pl_module.all_gather, local.to(pl_module.device), trainer.world_size)
        allv = gathered.cpu().numpy()
        if len(allv) == 0:
            return None
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
        predictions = self._gathered_predictions(trainer, pl_module) if stage == "test" else None
        if predictions is not None:
            va = _va_pairs(predictions) if self._has_va(pl_module) else None
        else:
            va = self._gathered_va(trainer, pl_module, stage) if self._has_va(pl_module) else None
        self._write(stage, trainer, pl_module, va, predictions)

    def _class_names(self, pl_module: L.LightningModule) -> tuple[str, ...]:
        names = tuple(getattr(pl_module, "class_names", ()) or ())
        if not names:
            num = int(getattr(self._net(pl_module), "num_classes", 0))
            names = tuple(f"class_{i}" for i in range(num))
        return names

    def _gathered_predictions(
        self, trainer: L.Trainer, pl_module: L.LightningModule
    ) -> Predictions | None:
        """Every rank's test rows, each sample once in index order (a collective)."""
        names = self._class_names(pl_module)
        ints, floats = self.buffers["test"].rows(len(names))
        if trainer.world_size > 1:
            device = pl_module.device
            ints = gather_rows(pl_module.all_gather, ints.to(device), trainer.world_size)
            floats = gather_rows(pl_module.all_gather, floats.to(device), trainer.world_size)
        if len(ints) == 0 or floats.shape[1] != len(names) + 4:
            return None
        return predictions_from_rows(ints, floats, names)

    @rank_zero_only
    def _write(
        self,
        stage: str,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        va: VAPairs | None,
        predictions: Predictions | None = None,
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
        report = write_run_report(out_dir, stage, confusion, names, va, reliability, self.plots)
        if stage == "test":
            self.predictions = predictions
            if predictions is None:
                log.warning("the test batches had no 'index'; no %s written", PREDICTIONS_FILE)
            else:
                report.predictions_csv = write_predictions(out_dir / PREDICTIONS_FILE, predictions)
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
