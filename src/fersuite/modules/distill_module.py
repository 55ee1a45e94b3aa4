"""``task=distill``: a frozen teacher distilled into any student model.

:class:`DistillationModule` is an :class:`~fersuite.modules.affect_module.AffectModule` (same
student metrics, logging, best tracking, optimizer and scheduler) whose training step adds
the teacher's outputs to the loss (:class:`~fersuite.losses.DistillationLoss`). The teacher:

* is frozen — eval mode whatever ``.train()`` is called with, no gradients, never in the
  optimizer;
* is not a registered submodule, so it is never saved in the student's checkpoint (which
  holds ``net.*`` plus the ``fersuite`` metadata and loads with
  :func:`fersuite.checkpoint.load_model_from_checkpoint`), never synchronised by DDP and
  moved to the module's device once;
* sees the same batch as the student, adapted on the device to its own input spec;
* is mapped onto the student's classes by name.

Teacher outputs come either from a live pass on every augmented batch or from a cache of one
pass over the un-augmented splits (``distill.teacher_outputs``). On val/test the teacher is
also evaluated once and ``teacher/<stage>/<metric>`` and ``<stage>/gap_<metric>`` (student
minus teacher) are logged, so they end up in ``metrics.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from fersuite.checkpoint import read_card
from fersuite.data.mixing import BatchMixing
from fersuite.data.multi import MultiDataModule
from fersuite.distill.adapt import adapt_images, same_input, spec_from
from fersuite.distill.cache import TeacherOutputCache, TeacherOutputs
from fersuite.distill.labels import ClassMap
from fersuite.distill.teacher import FrozenTeacher, load_teacher
from fersuite.errors import ConfigError
from fersuite.losses.distill import DistillationLoss, FeatureHint
from fersuite.metrics.affect import AffectMetrics
from fersuite.modules.affect_module import (
    AffectModule,
    OptimizerFactory,
    SchedulerFactory,
    build_loss,
    mixing_from_config,
)
from fersuite.types import AffectOutput, InputSpec

__all__ = ["TEACHER_OUTPUT_MODES", "DistillationModule", "build_distill_module"]

log = logging.getLogger(__name__)

TEACHER_OUTPUT_MODES = ("live", "cached")
_EVAL_STAGES = ("val", "test")
_EXTRA_KEY = "distill_module_state"


def _student_spec(net: nn.Module, data_spec: InputSpec) -> InputSpec:
    """What the student is fed: its declared size/channels, the data's normalisation.

    The data's mean/std are kept (they are what the checkpoint metadata records for
    inference) unless the channel count changes, where the student's own are used.
    """
    spec = getattr(net, "input_spec", None)
    if spec is None:
        return data_spec
    if spec.channels == data_spec.channels:
        return spec_from(spec.size, spec.channels, data_spec.mean, data_spec.std, "student input")
    return spec_from(spec.size, spec.channels, spec.mean, spec.std, "student input")


@torch.no_grad()
def _feature_channels(net: nn.Module, spec: InputSpec, what: str) -> int:
    fn = getattr(net, "forward_features", None)
    if fn is None:
        raise ConfigError(f"loss.hint_weight > 0 needs forward_features on the {what}")
    was_training = net.training
    net.eval()
    try:
        feats = fn(torch.zeros(spec.shape(1), device=next(net.parameters()).device))
    finally:
        net.train(was_training)
    if feats.ndim != 4:
        raise ConfigError(
            f"loss.hint_weight > 0 needs a (B, C, H, W) feature map from the {what}, got "
            f"{tuple(feats.shape)}"
        )
    return int(feats.shape[1])


class DistillationModule(AffectModule):
    """Trains ``net`` (the student) against ground truth and a frozen ``teacher``.

    Args (besides :class:`AffectModule`'s):
        teacher: the :class:`FrozenTeacher`.
        teacher_outputs: ``live`` (teacher on every augmented batch) or ``cached`` (one pass
            over the un-augmented splits, stored under ``cache_dir``, looked up by row).
        data_spec: what the batches are (size, channels, mean/std of the data pipeline).
        teacher_metrics: evaluate the teacher once on val/test and log the gaps.
    """

    def __init__(
        self,
        net: nn.Module,
        loss: DistillationLoss,
        optimizer: OptimizerFactory,
        teacher: FrozenTeacher,
        scheduler: SchedulerFactory | None = None,
        class_names: Sequence[str] = (),
        has_va: bool = True,
        monitor: str = "val/acc",
        compile: bool = False,
        monitor_mode: str | None = None,
        tta: str = "none",
        teacher_outputs: str = "live",
        data_spec: InputSpec | None = None,
        cache_dir: str | None = None,
        cache_batch_size: int = 64,
        cache_num_workers: int = 0,
        teacher_metrics: bool = True,
        mixing: BatchMixing | None = None,
    ) -> None:
        if not isinstance(loss, DistillationLoss):
            raise ConfigError(
                f"task=distill needs a distillation loss (loss=kd), got {type(loss).__name__}"
            )
        if not isinstance(teacher, FrozenTeacher):
            raise ConfigError(f"teacher must be a FrozenTeacher, got {type(teacher).__name__}")
        if teacher_outputs not in TEACHER_OUTPUT_MODES:
            raise ConfigError(
                f"distill.teacher_outputs={teacher_outputs!r}; expected one of "
                f"{list(TEACHER_OUTPUT_MODES)}"
            )
        if teacher_outputs == "cached" and not cache_dir:
            raise ConfigError("distill.teacher_outputs=cached needs distill.cache_dir")
        if teacher_outputs == "cached" and loss.hint_weight > 0:
            raise ConfigError(
                "loss.hint_weight > 0 needs distill.teacher_outputs=live (teacher feature maps "
                "are not cached)"
            )
        if teacher_outputs == "cached" and mixing is not None and mixing.enabled:
            raise ConfigError(
                "data.augment.mixup/cutmix need distill.teacher_outputs=live (cached teacher "
                "outputs are of the un-mixed images)"
            )
        if not class_names:
            raise ConfigError("task=distill needs the dataset's class names to map the teacher's")
        frozen = teacher
        student_data_spec = data_spec or getattr(net, "input_spec", None)
        if student_data_spec is None:
            raise ConfigError("pass data_spec (the batches' size, channels, mean and std)")
        # Only plain data reaches the saved hyperparameters (checkpoints load weights_only).
        teacher = frozen.source  # type: ignore[assignment]
        data_spec = asdict(student_data_spec)  # type: ignore[assignment]
        super().__init__(
            net,
            loss,
            optimizer,
            scheduler=scheduler,
            class_names=class_names,
            has_va=has_va,
            monitor=monitor,
            compile=compile,
            monitor_mode=monitor_mode,
            tta=tta,
            mixing=mixing,
        )
        # Deliberately not a submodule: not saved, not in parameters(), not DDP-synchronised.
        object.__setattr__(self, "_teacher", frozen)
        self.teacher_outputs = teacher_outputs
        self.data_spec = spec_from(
            student_data_spec.size,
            student_data_spec.channels,
            student_data_spec.mean,
            student_data_spec.std,
            "data",
        )
        self.student_spec = _student_spec(net, self.data_spec)
        self.class_map = ClassMap.build(self.class_names, frozen.class_names)
        loss.set_class_map(*self.class_map.indices())
        self.teacher_va = frozen.has_va
        if has_va and not frozen.has_va and loss.nu > 0:
            log.warning("the teacher was not trained on valence/arousal: no teacher-bounded terms")
        self.hint: FeatureHint | None = None
        if loss.hint_weight > 0:
            self.hint = FeatureHint(
                _feature_channels(net, self.student_spec, "student"),
                _feature_channels(frozen.net, frozen.input_spec, "teacher"),
            )
        self.cache = (
            TeacherOutputCache(
                cache_dir,  # type: ignore[arg-type]
                frozen,
                self.data_spec,
                batch_size=cache_batch_size,
                num_workers=cache_num_workers,
            )
            if teacher_outputs == "cached"
            else None
        )
        num_classes = len(self.class_names)
        teacher_has_va = has_va and frozen.has_va
        self.teacher_metrics = nn.ModuleDict(
            {
                f"{s}_": AffectMetrics(num_classes, teacher_has_va, confusion=False)
                for s in _EVAL_STAGES
            }
        )
        self._teacher_pending = dict.fromkeys(_EVAL_STAGES, teacher_metrics)
        self.teacher_values: dict[str, dict[str, torch.Tensor]] = {}
        self._outputs: dict[str, TeacherOutputs] = {}
        self._hint_context: tuple[dict[str, torch.Tensor], torch.Tensor | None] | None = None

    # ----------------------------------------------------------------- teacher handling
    @property
    def teacher(self) -> FrozenTeacher:
        return self._teacher  # type: ignore[no-any-return]

    def train(self, mode: bool = True) -> DistillationModule:
        super().train(mode)
        self.teacher.eval()  # never flipped by Lightning's .train() calls
        return self

    def _teacher_on_device(self) -> None:
        if self.teacher.device != self.device:
            self.teacher.to(self.device)

    def teacher_forward(
        self, stage: str, batch: dict[str, torch.Tensor], features: bool = False
    ) -> tuple[AffectOutput, torch.Tensor | None]:
        """Teacher outputs for ``batch``: cached (looked up by ``index``) or a live pass."""
        cached = self._outputs.get(stage)
        if cached is not None and not features:
            if "index" not in batch:
                raise KeyError(
                    "distill.teacher_outputs=cached needs batches with 'index' (the dataset row)"
                )
            return cached.lookup(batch["index"]), None
        if stage == "train" and self.cache is not None:
            raise RuntimeError("cached teacher outputs for the train split were not loaded")
        self._teacher_on_device()
        x = adapt_images(batch["image"], self.data_spec, self.teacher.input_spec)
        if features:
            return self.teacher.forward_with_features(x)
        return self.teacher(x), None

    def _load_outputs(self, split: str) -> None:
        """Cached mode: the writer rank computes/reads the split's outputs, others wait."""
        assert self.cache is not None
        dm = self.trainer.datamodule
        if dm is None or not hasattr(dm, "splits") or split not in getattr(dm, "splits", {}):
            raise ConfigError(
                "distill.teacher_outputs=cached needs a fersuite AffectDataModule (its splits "
                "are read with the evaluation transform)"
            )
        self._teacher_on_device()
        writer = self.trainer.is_global_zero
        out = self.cache.get(dm, split, self.device, compute=True) if writer else None
        self.trainer.strategy.barrier(f"fersuite-distill-cache-{split}")
        if out is None:
            out = self.cache.get(dm, split, self.device, compute=False)
        self._outputs[split] = out

    # --------------------------------------------------------------------- forward/steps
    def student_input(self, images: torch.Tensor) -> torch.Tensor:
        return adapt_images(images, self.data_spec, self.student_spec)

    def forward(self, x: torch.Tensor) -> AffectOutput:
        """Student prediction for a batch in the data's spec.

        During a training step with feature hints, the hint value is also computed here (one
        student pass) and put in the batch as ``hint_loss`` for the loss.
        """
        x = self.student_input(x)
        ctx = self._hint_context
        if ctx is None or self.hint is None:
            return self.net(x)  # type: ignore[no-any-return]
        batch, teacher_feats = ctx
        feats = self.net.forward_features(x)  # type: ignore[operator]
        batch["hint_loss"] = self.hint(feats, teacher_feats)
        return self.net.forward_head(feats)  # type: ignore[no-any-return,operator]

    def with_teacher(
        self, batch: dict[str, torch.Tensor], teacher_out: AffectOutput
    ) -> dict[str, torch.Tensor]:
        """The batch plus the teacher's predictions, as :class:`DistillationLoss` reads them."""
        out = dict(batch)
        out["teacher_expression"] = teacher_out.expression
        if self.teacher_va:
            out["teacher_valence"] = teacher_out.valence
            out["teacher_arousal"] = teacher_out.arousal
        return out

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        # The supervised step (forward, loss, metrics, logging) runs on the batch extended
        # with the teacher's outputs.
        batch = self.mixed(batch, batch_idx)  # the teacher sees the mixed images too
        use_hint = self.hint is not None
        teacher_out, teacher_feats = self.teacher_forward("train", batch, features=use_hint)
        batch = self.with_teacher(batch, teacher_out)
        self._hint_context = (batch, teacher_feats) if use_hint else None
        try:
            return self._step("train", batch)
        finally:
            self._hint_context = None

    def _update_teacher_metrics(self, stage: str, batch: dict[str, torch.Tensor]) -> None:
        if not self._teacher_pending.get(stage) or self.trainer.sanity_checking:
            return
        teacher_out, _ = self.teacher_forward(stage, batch)
        scores = self.class_map.teacher_logits_for_student(teacher_out.expression)
        mapped = AffectOutput(scores, teacher_out.valence, teacher_out.arousal)
        self.teacher_metrics[f"{stage}_"].update(mapped, self._batch_for_loss(batch))

    def validation_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int
    ) -> AffectOutput | None:
        if not self.nothing_to_score(batch):
            self._update_teacher_metrics("val", batch)
        return super().validation_step(batch, batch_idx)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> AffectOutput | None:
        if not self.nothing_to_score(batch):
            self._update_teacher_metrics("test", batch)
        return super().test_step(batch, batch_idx)

    def _epoch_end(self, stage: str) -> dict[str, torch.Tensor]:
        values = super()._epoch_end(stage)
        if stage not in _EVAL_STAGES or self.trainer.sanity_checking:
            return values
        if self._teacher_pending.get(stage):
            metrics = self.teacher_metrics[f"{stage}_"]
            self.teacher_values[stage] = {k: v.detach() for k, v in metrics.compute().items()}
            metrics.reset()
            self._teacher_pending[stage] = False
            self._outputs.pop(stage, None)  # evaluated once: the cached rows are not needed
        teacher = self.teacher_values.get(stage)
        if teacher:
            self.log_dict({f"teacher/{stage}/{k}": v for k, v in teacher.items()})
            gaps = {f"{stage}/gap_{k}": values[k] - v for k, v in teacher.items() if k in values}
            self.log_dict(gaps)
        return values

    # ------------------------------------------------------------------------- hooks
    def on_fit_start(self) -> None:
        self._teacher_on_device()
        if self.cache is not None:
            self._load_outputs("train")

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self._teacher_on_device()
        if (
            self.cache is not None
            and self._teacher_pending["val"]
            and not self.trainer.sanity_checking
        ):
            self._load_outputs("val")

    def on_test_epoch_start(self) -> None:
        self._teacher_on_device()
        if self.cache is not None and self._teacher_pending["test"]:
            self._load_outputs("test")

    # ------------------------------------------------------------------- checkpoints
    @property  # type: ignore[override]
    def checkpoint_meta(self) -> dict[str, Any] | None:
        return self.__dict__.get("_checkpoint_meta")

    @checkpoint_meta.setter
    def checkpoint_meta(self, meta: dict[str, Any] | None) -> None:
        # The student's checkpoint records what the *student* is fed (it may differ from the
        # data's size/channels when the data pipeline serves the teacher's resolution).
        if meta is not None and "student_spec" in self.__dict__:
            meta = read_card(meta, "student").with_input(self.student_spec).to_dict()
        self.__dict__["_checkpoint_meta"] = meta

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        # The checkpoint's state_dict is the student's alone (``net.*``): training-only state
        # (hint adapter, best-metric tracker) is kept beside it for resuming.
        sd = checkpoint.get("state_dict", {})
        extra = {k: sd.pop(k) for k in [k for k in sd if not k.startswith("net.")]}
        if extra:
            checkpoint[_EXTRA_KEY] = extra

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        sd = checkpoint.setdefault("state_dict", {})
        extra = checkpoint.pop(_EXTRA_KEY, None) or {}
        sd.update({k: v for k, v in extra.items() if not k.startswith("net.")})
        # Missing training-only state (a plain student checkpoint): keep the current values.
        for key, value in self.state_dict().items():
            if not key.startswith("net.") and key not in sd:
                sd[key] = value


def build_distill_module(cfg: DictConfig, datamodule: Any) -> DistillationModule:
    """The ``task=distill`` module from a composed config (``conf/task/distill.yaml`` names it:
    ``task.module``); its settings are ``cfg.distill`` (:class:`~fersuite.distill.settings.
    DistillSettings`, checked with every other ``_target_`` node before the run)."""
    dcfg = cfg.get("distill")
    if dcfg is None:
        raise ConfigError("task=distill needs the distill.* settings (conf/task/distill.yaml)")
    if isinstance(datamodule, MultiDataModule):
        raise ConfigError(
            "task=distill does not train on data=multi yet (the teacher-output cache and the "
            "distillation losses are per dataset); distil on one dataset"
        )
    d = OmegaConf.to_container(dcfg, resolve=True)
    assert isinstance(d, dict)
    classes = d.get("teacher_classes")
    teacher = load_teacher(
        teacher=str(d.get("teacher") or "checkpoint"),
        teacher_ckpt=d.get("teacher_ckpt"),
        teacher_weights=d.get("teacher_weights"),
        teacher_classes=list(classes) if classes else None,
        teacher_input_size=d.get("teacher_input_size"),
    )
    net = instantiate(cfg.model, num_classes=datamodule.num_classes)
    loss = build_loss(cfg, datamodule, check=_require_distillation_loss)
    data_spec = spec_from(
        datamodule.image_size, datamodule.in_chans, datamodule.mean, datamodule.std, "data"
    )
    if not same_input(data_spec, _student_spec(net, data_spec)):
        log.info("the student's input is adapted from the data's on the device")
    return DistillationModule(
        net=net,
        loss=loss,
        optimizer=instantiate(cfg.optimizer),
        teacher=teacher,
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        class_names=datamodule.class_names,
        # VA heads count only when the loss trains them (loss.valence/arousal_weight > 0).
        has_va=bool(datamodule.has_va and loss.trains_va),
        monitor=cfg.monitor,
        compile=cfg.get("compile", False),
        monitor_mode=cfg.get("monitor_mode"),
        tta=str(cfg.get("tta") or "none"),
        teacher_outputs=str(d.get("teacher_outputs", "live")),
        data_spec=data_spec,
        cache_dir=d.get("cache_dir"),
        cache_batch_size=int(d.get("cache_batch_size") or 64),
        cache_num_workers=int(d.get("cache_num_workers") or 0),
        teacher_metrics=bool(d.get("teacher_metrics", True)),
        mixing=mixing_from_config(cfg, datamodule.num_classes),
    )


def _require_distillation_loss(loss: Any, loss_cfg: dict[str, Any]) -> None:
    if not isinstance(loss, DistillationLoss):
        raise ConfigError(
            f"task=distill needs a distillation loss (loss=kd); loss._target_="
            f"{loss_cfg.get('_target_')}"
        )
