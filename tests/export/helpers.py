"""Checkpoints in fersuite-train's format, without training (random but non-trivial weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from fersuite.checkpoint import META_KEY, training_card
from fersuite.labels import CANONICAL_CLASSES
from fersuite.models.registry import create_model

TARGET = "fersuite.models.registry.create_model"

#: Small configurations of every zoo architecture (EmoNet: one hourglass stack at 64x64).
ZOO: dict[str, dict[str, Any]] = {
    "timm": {"arch": "timm", "name": "mobilenetv2_100", "in_chans": 1, "input_size": 48},
    "mit_fer": {"arch": "mit_fer", "variant": "b0", "in_chans": 1, "input_size": 48},
    "lightweight_cnn": {"arch": "lightweight_cnn", "in_chans": 1, "input_size": 48},
    "emonet": {"arch": "emonet", "in_chans": 3, "input_size": 64, "num_stacks": 1},
}

#: The smallest lightweight CNN (one bottleneck, 32x32, 8 classes): the tiniest model
#: fersuite-export handles in seconds.
TINY_CNN = {
    "arch": "lightweight_cnn",
    "in_chans": 1,
    "input_size": 32,
    "bottlenecks": [[1, 8, 1, 2]],
    "expansion_channels": 16,
    "width_mult": 0.25,
}


def _perturb(net: nn.Module, model_cfg: dict[str, Any], seed: int) -> None:
    """Make eval-mode outputs depend on the input: heads are randomised and the BatchNorm
    statistics are estimated on random inputs, as training would (default statistics let
    activations saturate, giving the same output for every image)."""
    gen = torch.Generator().manual_seed(seed)
    c, s = int(model_cfg["in_chans"]), int(model_cfg["input_size"])
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Linear):
                m.weight.copy_(0.05 * torch.randn(m.weight.shape, generator=gen))
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the calibration batches
        net.train()
        for _ in range(2):
            net(torch.randn((4, c, s, s), generator=gen))
        net.eval()


def make_checkpoint(
    path: Path,
    model_cfg: dict[str, Any],
    mean: tuple[float, ...] = (0.5,),
    std: tuple[float, ...] = (0.5,),
    seed: int = 0,
) -> tuple[Path, nn.Module]:
    """Write a checkpoint as fersuite-train does (``net.`` weights + plain-data meta)."""
    torch.manual_seed(seed)
    cfg = {"_target_": TARGET, **model_cfg}
    net = create_model(num_classes=len(CANONICAL_CLASSES), **model_cfg)
    _perturb(net, model_cfg, seed)
    net.eval()
    card = training_card(
        model_cfg=cfg,
        class_names=CANONICAL_CLASSES,
        has_va=True,
        input_size=int(model_cfg["input_size"]),
        in_chans=int(model_cfg["in_chans"]),
        mean=mean,
        std=std,
    )
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, META_KEY: card}, path)
    return path, net
