"""Small builders shared by the distillation tests (no training, CPU, seconds)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fersuite.checkpoint import training_card
from fersuite.labels import CANONICAL_CLASSES
from fersuite.models.registry import create_model

#: Synthetic data small enough for in-process Trainer runs.
SMALL_DATA = [
    "data.train_size=32",
    "data.val_size=16",
    "data.test_size=16",
    "data.batch_size=16",
    "data.eval_batch_size=16",
    "data.num_workers=0",
]


def write_teacher_ckpt(
    path: Path,
    seed: int = 0,
    in_chans: int = 3,
    input_size: int = 64,
    class_names: tuple[str, ...] = CANONICAL_CLASSES,
    has_va: bool = True,
) -> nn.Module:
    """A fersuite checkpoint (``net.*`` + metadata) of a random LightweightCNN teacher.

    Its input spec (64x64 RGB) differs from the default student's (48x48 gray), so every
    use exercises the input adaptation. BatchNorm running statistics are randomised so a
    stray BN update would be visible.
    """
    torch.manual_seed(seed)
    model_cfg = {
        "_target_": "fersuite.models.registry.create_model",
        "arch": "lightweight_cnn",
        "in_chans": in_chans,
        "input_size": input_size,
        "width_mult": 0.5,
    }
    net = create_model(
        "lightweight_cnn",
        num_classes=len(class_names),
        in_chans=in_chans,
        input_size=input_size,
        width_mult=0.5,
    )
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    card = training_card(
        model_cfg=model_cfg,
        class_names=tuple(class_names),
        has_va=has_va,
        input_size=input_size,
        in_chans=in_chans,
        mean=(0.5,),
        std=(0.5,),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": sd, "fersuite": card}, path)
    return net.eval()


def distill_overrides(teacher_ckpt: Path, *extra: str) -> list[str]:
    return [
        "task=distill",
        f"distill.teacher_ckpt={teacher_ckpt}",
        "model=lightweight_cnn",
        "model.width_mult=0.5",
        "logger=none",
        "callbacks=none",
        *SMALL_DATA,
        *extra,
    ]
