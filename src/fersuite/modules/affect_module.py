"""The supervised LightningModule: any zoo model + joint head, affect loss and metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import lightning.pytorch as L
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn
from torchmetrics import MaxMetric, MinMetric

from fersuite.data.mixing import BatchMixing
from fersuite.losses.affect import AffectLoss
from fersuite.metrics.affect import AffectMetrics
from fersuite.modules.optim import weight_decay_param_groups
from fersuite.monitoring import monitor_direction
from fersuite.types import AffectOutput, select_rows

#: Test-time augmentation (``tta``) of validation and test: ``hflip`` averages the logits and
#: valence/arousal of the image and its mirror image.
TTA_MODES = ("none", "hflip")

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


class AffectModule(L.LightningModule):
    """Trains ``net`` (any model returning :class:`AffectOutput`) with ``loss``.

    Logs per stage (``train/``, ``val/``, ``test/``) the loss terms and the metrics of
    :class:`AffectMetrics` (the test stage also ``test/recall_<class>``), plus
    ``<monitor>_best``: the best value so far of ``monitor`` (any logged val metric or loss
    term), lowest or highest as :func:`monitor_direction` says (``monitor_mode`` overrides).
    The confusion matrices of the last
    val/test epoch are kept in :attr:`confusion`.

    ``sources`` (``data=multi``: its source names; ``source_has_va`` whether each has VA): the
    val/test stages also log ``<stage>/<source>/<metric>`` over the samples whose batch key
    ``source`` is that source's position, each scored among its own classes (the batch's
    ``class_mask``), beside the pooled metrics.
    """

    def __init__(
        self,
        net: nn.Module,
        loss: AffectLoss,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        class_names: Sequence[str] = (),
        has_va: bool = True,
        monitor: str = "val/acc",
        compile: bool = False,
        monitor_mode: str | None = None,
        tta: str = "none",
        mixing: BatchMixing | None = None,
        sources: Sequence[str] = (),
        source_has_va: Sequence[bool] = (),
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            ignore=["net", "loss", "optimizer", "scheduler", "mixing"], logger=False
        )
        self.net = net
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.class_names = tuple(class_names)
        num_classes = int(getattr(net, "num_classes", len(self.class_names)))
        if self.class_names and len(self.class_names) != num_classes:
            raise ValueError(
                f"the model predicts {num_classes} classes but the dataset has "
                f"{len(self.class_names)} ({', '.join(self.class_names)}); set model.num_classes"
            )
        if tta not in TTA_MODES:
            raise ValueError(f"tta={tta!r}; expected one of {', '.join(TTA_MODES)}")
        self.tta = tta
        #: Mixup/cutmix of training batches (``data.augment.mixup``/``cutmix``; None: off).
        self.mixing = mixing if mixing is not None and mixing.enabled else None
        self.has_va = has_va
        self.monitor = monitor
        self.compile_net = compile
        self.metrics = nn.ModuleDict(
            {
                "train_": AffectMetrics(num_classes, has_va, confusion=False),
                "val_": AffectMetrics(num_classes, has_va),
                # test/recall_<class> for each class (named class_<i> without names)
                "test_": AffectMetrics(
                    num_classes,
                    has_va,
                    class_names=self.class_names or [f"class_{i}" for i in range(num_classes)],
                ),
            }
        )
        self.sources = tuple(sources)
        va = tuple(source_has_va) or (True,) * len(self.sources)
        if len(va) != len(self.sources):
            raise ValueError(f"source_has_va has {len(va)} entries for {len(self.sources)} sources")
        if self.sources:  # no such attribute otherwise: single-dataset modules are unchanged
            self.source_metrics = nn.ModuleDict(
                {
                    f"{stage}_{i}": AffectMetrics(num_classes, has_va and va[i], confusion=False)
                    for stage in ("val", "test")
                    for i in range(len(self.sources))
                }
            )
        self.monitor_mode = monitor_direction(monitor, monitor_mode)
        self.best = MinMetric() if self.monitor_mode == "min" else MaxMetric()
        self.best.persistent(True)  # checkpointed, so a resumed run keeps its best so far
        self.confusion: dict[str, torch.Tensor] = {}
        #: Reliability-diagram bins of the last val/test epoch (AffectMetrics.reliability).
        self.reliability: dict[str, torch.Tensor] = {}
        #: Plain-data description saved in every checkpoint (see fersuite.checkpoint).
        self.checkpoint_meta: dict[str, Any] | None = None

    def forward(self, x: torch.Tensor) -> AffectOutput:
        return self.net(x)  # type: ignore[no-any-return]

    def setup(self, stage: str) -> None:
        if self.compile_net and stage == "fit":
            self.net = torch.compile(self.net)  # type: ignore[assignment]

    def _batch_for_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.has_va:
            return batch
        return {k: v for k, v in batch.items() if k not in ("valence", "arousal", "va_mask")}

    def evaluate_forward(self, x: torch.Tensor) -> AffectOutput:
        """The prediction that validation and test score: ``forward`` with ``tta``."""
        out = self(x)
        if self.tta == "hflip":
            mirrored = self(torch.flip(x, dims=(-1,)))
            out = AffectOutput(*((a + b) / 2 for a, b in zip(out, mirrored, strict=True)))
        return out

    def _step(self, stage: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self(batch["image"]) if stage == "train" else self.evaluate_forward(batch["image"])
        self.last_output = out
        b = self._batch_for_loss(batch)
        terms = self.loss(out, b)
        self.last_loss_terms = terms  # read by fersuite.callbacks.nonfinite_guard
        self.metrics[f"{stage}_"].update(out, b)
        if self.sources and stage != "train" and "source" in batch:
            self._update_sources(stage, out, b)
        bs = batch["image"].shape[0]
        on_step = stage == "train"
        for name, value in terms.items():
            self.log(
                f"{stage}/{name}",
                value.detach(),
                on_step=on_step,
                on_epoch=True,
                prog_bar=name == "loss",
                batch_size=bs,
                sync_dist=not on_step,
            )
        return terms["loss"]

    def _update_sources(
        self, stage: str, out: AffectOutput, batch: dict[str, torch.Tensor]
    ) -> None:
        """Per-source metrics: each source's samples, scored among the classes it has."""
        logits = out.expression.detach()
        mask = batch.get("class_mask")
        if mask is not None:
            logits = logits.masked_fill(~mask.bool(), torch.finfo(logits.dtype).min)
        for i in range(len(self.sources)):
            sel = batch["source"] == i
            if not bool(sel.any()):
                continue
            sub_out = AffectOutput(logits[sel], out.valence[sel], out.arousal[sel])
            self.source_metrics[f"{stage}_{i}"].update(sub_out, select_rows(batch, sel))

    def mixed(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """The training batch after mixup/cutmix (the batch itself when off)."""
        if self.mixing is None:
            return batch
        return self.mixing(batch, self.current_epoch, batch_idx, self.global_rank)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step("train", self.mixed(batch, batch_idx))

    @staticmethod
    def nothing_to_score(batch: dict[str, torch.Tensor]) -> bool:
        """An evaluation batch left empty: under DDP the data module drops the samples its
        distributed sampler only repeated (``AffectDataModule.on_before_batch_transfer``)."""
        return batch["image"].shape[0] == 0

    def validation_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int
    ) -> AffectOutput | None:
        if self.nothing_to_score(batch):
            return None
        self._step("val", batch)
        return self.last_output  # the scored prediction (with tta), for the reports

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> AffectOutput | None:
        if self.nothing_to_score(batch):
            return None
        self._step("test", batch)
        return self.last_output

    def _epoch_end(self, stage: str) -> dict[str, torch.Tensor]:
        metrics = self.metrics[f"{stage}_"]
        values = metrics.compute()
        self.log_dict({f"{stage}/{k}": v for k, v in values.items()}, prog_bar=False)
        if stage != "train":
            cm = metrics.confusion()
            if cm is not None:
                self.confusion[stage] = cm.detach().cpu()
            rel = metrics.reliability()
            if rel is not None:
                self.reliability[stage] = rel.detach().cpu()
            for i, name in enumerate(self.sources):
                per_source = self.source_metrics[f"{stage}_{i}"]
                self.log_dict(
                    {f"{stage}/{name}/{k}": v for k, v in per_source.compute().items()},
                    prog_bar=False,
                )
                per_source.reset()
        metrics.reset()
        return values

    def on_train_epoch_end(self) -> None:
        self._epoch_end("train")

    def on_validation_epoch_end(self) -> None:
        values = self._epoch_end("val")
        if self.trainer.sanity_checking:
            return
        key = self.monitor.split("/", 1)[-1]
        # Metrics computed here, or a loss term whose epoch mean Lightning has already
        # reduced (logged in validation_step; see EvaluationLoop._store_dataloader_outputs).
        value = values.get(key) if self.monitor.startswith("val/") else None
        if value is None:
            value = self.trainer.callback_metrics.get(self.monitor)
        if value is not None:
            self.best(value)
            self.log(f"{self.monitor}_best", self.best.compute(), prog_bar=True)

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")

    def on_validation_epoch_start(self) -> None:
        self.metrics["val_"].reset()
        for i in range(len(self.sources)):
            self.source_metrics[f"val_{i}"].reset()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.checkpoint_meta is not None:
            checkpoint["fersuite"] = self.checkpoint_meta

    def configure_optimizers(self) -> Any:
        # No weight decay on norms, biases and embeddings (see fersuite.modules.optim).
        optimizer = self.optimizer_factory(params=weight_decay_param_groups(self))
        if self.scheduler_factory is None:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(optimizer=optimizer, total_steps=max(1, total))
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def build_affect_module(
    cfg: Any, datamodule: Any, net: nn.Module | None = None, net_has_va: bool = True
) -> AffectModule:
    """The ``task=supervised`` module from a composed config (``conf/task/supervised.yaml``
    names it: ``task.module``). ``net`` (a trained network) skips building one
    (``net_has_va``: its checkpoint says its VA heads were trained)."""

    if net is None:
        net = instantiate(cfg.model, num_classes=datamodule.num_classes)
    loss = build_loss(cfg, datamodule)
    return AffectModule(
        net=net,
        loss=loss,
        # fersuite-eval has no optimizer: it only tests.
        optimizer=instantiate(cfg.optimizer) if cfg.get("optimizer") else None,  # type: ignore[arg-type]
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        class_names=datamodule.class_names,
        # VA heads count only when the loss trains them (loss=ce does not): no VA metrics,
        # figures or checkpoint has_va otherwise.
        has_va=bool(datamodule.has_va and loss.trains_va and net_has_va),
        monitor=cfg.get("monitor") or "val/acc",
        compile=cfg.get("compile", False),
        monitor_mode=cfg.get("monitor_mode"),
        tta=str(cfg.get("tta") or "none"),
        mixing=mixing_from_config(cfg, datamodule.num_classes),
        sources=tuple(getattr(datamodule, "source_names", ())),
        source_has_va=tuple(getattr(datamodule, "source_has_va", ())),
    )


def mixing_from_config(cfg: Any, num_classes: int) -> BatchMixing | None:
    """``data.augment.mixup``/``cutmix`` of a composed config (None when both are 0), seeded
    by ``seed`` (or this process's torch seed when ``seed=null``)."""

    mixup = float(OmegaConf.select(cfg, "data.augment.mixup", default=0.0) or 0.0)
    cutmix = float(OmegaConf.select(cfg, "data.augment.cutmix", default=0.0) or 0.0)
    if mixup <= 0 and cutmix <= 0:
        return None
    seed = cfg.get("seed")
    return BatchMixing(
        mixup, cutmix, int(num_classes), int(torch.initial_seed() if seed is None else seed)
    )


def build_loss(
    cfg: Any, datamodule: Any, check: Callable[[Any, dict[str, Any]], None] | None = None
) -> Any:
    """The loss of ``cfg.loss``; ``class_weights: auto`` takes the training split's inverse
    class frequencies (after ``check(loss, loss_cfg)``, which may refuse the loss first)."""

    loss_cfg = OmegaConf.to_container(cfg.loss, resolve=True)
    assert isinstance(loss_cfg, dict)
    auto_weights = loss_cfg.get("class_weights") == "auto"
    if auto_weights:
        loss_cfg["class_weights"] = None
    loss = instantiate(loss_cfg)
    if check is not None:
        check(loss, loss_cfg)
    if auto_weights:
        datamodule.setup("fit")
        loss.set_class_weights(datamodule.class_weights())
    return loss
