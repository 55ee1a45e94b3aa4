"""The frozen teacher: loading it (fersuite checkpoint or official EmoNet weights) and
keeping it frozen (eval mode whatever ``.train()`` says, no gradients)."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from fersuite.checkpoint import load_model_from_checkpoint
from fersuite.distill.labels import default_teacher_classes
from fersuite.errors import ConfigError, PretrainedWeightsError
from fersuite.models.emonet import EmoNet, load_emonet_weights
from fersuite.models.weights import load_state_dict_file, strip_prefixes
from fersuite.types import AffectOutput, InputSpec

__all__ = ["TEACHER_KINDS", "FrozenTeacher", "file_sha256", "load_teacher"]

log = logging.getLogger(__name__)

TEACHER_KINDS = ("checkpoint", "emonet")


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


class FrozenTeacher(nn.Module):
    """A teacher network that is always in eval mode and never receives gradients.

    ``train(True)`` is ignored (BatchNorm statistics and dropout stay frozen), every
    parameter has ``requires_grad=False`` and forward passes run under ``no_grad``. Outputs
    are float32 :class:`AffectOutput`. ``input_spec`` is what the network was trained on;
    ``weights_sha256`` identifies the weights file (it keys the teacher-output cache).
    """

    def __init__(
        self,
        net: nn.Module,
        class_names: Sequence[str],
        input_spec: InputSpec,
        has_va: bool = True,
        source: str = "",
        weights_sha256: str = "",
    ) -> None:
        super().__init__()
        num_classes = getattr(net, "num_classes", None)
        if num_classes is not None and int(num_classes) != len(class_names):
            raise ConfigError(
                f"the teacher predicts {num_classes} classes but {len(class_names)} class "
                f"names were given ({', '.join(class_names)})"
            )
        self.net = net
        self.class_names = tuple(class_names)
        self.input_spec = input_spec
        self.has_va = has_va
        self.source = source
        self.weights_sha256 = weights_sha256
        self.net.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FrozenTeacher:
        # Always eval: Lightning (or anyone) calling .train() must not unfreeze BatchNorm.
        return super().train(False)

    @property
    def device(self) -> torch.device:
        p = next(self.net.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        p = next(self.net.parameters(), None)
        return p.dtype if p is not None else torch.float32

    @staticmethod
    def _float(out: AffectOutput) -> AffectOutput:
        return AffectOutput(out.expression.float(), out.valence.float(), out.arousal.float())

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> AffectOutput:
        """Prediction for a batch already adapted to :attr:`input_spec`."""
        out = self.net(x.to(self.dtype))
        return self._float(out)

    @torch.no_grad()
    def forward_with_features(self, x: torch.Tensor) -> tuple[AffectOutput, torch.Tensor]:
        """(prediction, ``forward_features`` map) from one pass (for feature hints)."""
        feats = self.net.forward_features(x.to(self.dtype))  # type: ignore[operator]
        out = self.net.forward_head(feats)  # type: ignore[operator]
        if not isinstance(out, AffectOutput):
            raise TypeError(f"{type(self.net).__name__}.forward_head did not return AffectOutput")
        return self._float(out), feats.float()


def _require_file(path: str | None, key: str, what: str) -> Path:
    if not path:
        raise ConfigError(f"{key} is required: {what}")
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{key}={path}: file not found ({what})")
    return p


def _load_checkpoint_teacher(path: Path, classes: Sequence[str] | None) -> FrozenTeacher:

    net, card = load_model_from_checkpoint(path)
    names = tuple(classes) if classes else card.class_names
    return FrozenTeacher(
        net,
        names,
        card.input,  # the teacher's model card says what it was trained on
        has_va=card.has_va,
        source=f"checkpoint:{path}",
        weights_sha256=file_sha256(path),
    )


def _load_emonet_teacher(
    path: Path, classes: Sequence[str] | None, input_size: int | None
) -> FrozenTeacher:

    sd = strip_prefixes(load_state_dict_file(path), ("module.",))
    head = sd.get("emo_fc_2.3.weight")
    if head is None or head.ndim != 2 or head.shape[0] < 3:
        raise PretrainedWeightsError(
            f"distill.teacher_weights={path}: not an EmoNet state dict (no emo_fc_2.3.weight "
            "of shape (num_classes + 2, 128))"
        )
    num_classes = int(head.shape[0]) - 2
    names = tuple(classes) if classes else default_teacher_classes(num_classes, str(path))
    net = EmoNet(num_expressions=num_classes, input_size=input_size or 256, freeze_trunk=True)
    try:
        load_emonet_weights(net, path)
    except ValueError as exc:
        raise PretrainedWeightsError(f"distill.teacher_weights: {exc}") from exc
    return FrozenTeacher(
        net,
        names,
        net.input_spec,
        has_va=True,
        source=f"emonet:{path}",
        weights_sha256=file_sha256(path),
    )


def load_teacher(
    teacher: str = "checkpoint",
    teacher_ckpt: str | None = None,
    teacher_weights: str | None = None,
    teacher_classes: Sequence[str] | None = None,
    teacher_input_size: int | None = None,
) -> FrozenTeacher:
    """Build the frozen teacher from the ``distill.*`` settings (on the CPU).

    * ``teacher=checkpoint``: ``teacher_ckpt`` is any checkpoint written by fersuite-train
      (rebuilt with :func:`fersuite.checkpoint.load_model_from_checkpoint`; classes and input
      spec come from its metadata).
    * ``teacher=emonet``: ``teacher_weights`` is an official EmoNet ``.pth`` (8 or 5 classes,
      inferred from the file); input 256×256 RGB in [0, 1] unless ``teacher_input_size``.
    """
    if teacher not in TEACHER_KINDS:
        raise ConfigError(f"distill.teacher={teacher!r}; expected one of {list(TEACHER_KINDS)}")
    if teacher_input_size is not None and teacher != "emonet":
        raise ConfigError(
            "distill.teacher_input_size only applies to distill.teacher=emonet (a checkpoint "
            "teacher's input spec is read from its metadata)"
        )
    if teacher == "checkpoint":
        if teacher_weights:
            raise ConfigError(
                "distill.teacher_weights is for distill.teacher=emonet; a fersuite checkpoint "
                "goes in distill.teacher_ckpt"
            )
        path = _require_file(
            teacher_ckpt, "distill.teacher_ckpt", "a checkpoint written by fersuite-train"
        )
        t = _load_checkpoint_teacher(path, teacher_classes)
    else:
        path = _require_file(
            teacher_weights, "distill.teacher_weights", "an EmoNet state dict (emonet_8.pth)"
        )
        t = _load_emonet_teacher(path, teacher_classes, teacher_input_size)
    log.info(
        "teacher %s: %d classes, input %dx%d x%d, sha256 %s",
        t.source,
        len(t.class_names),
        t.input_spec.size,
        t.input_spec.size,
        t.input_spec.channels,
        t.weights_sha256[:12],
    )
    return t
