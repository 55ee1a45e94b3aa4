"""Rebuilding a model from a fersuite checkpoint, without unpickling arbitrary objects.

Every checkpoint written by ``fersuite-train`` carries, under the key ``"fersuite"``, plain
data only: the model config (``model_cfg``, instantiable with Hydra), the class names, the
input spec and the data normalisation. ``torch.load(weights_only=True)`` can read it, so a
crafted pickle is refused instead of executed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from torch import nn

from fersuite.models.weights import PretrainedWeightsError, describe_mismatch

META_KEY = "fersuite"


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint says about the model it holds."""

    model_cfg: dict[str, Any]
    class_names: tuple[str, ...]
    has_va: bool
    input_size: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_cfg": self.model_cfg,
            "class_names": list(self.class_names),
            "has_va": self.has_va,
            "input_size": self.input_size,
            "in_chans": self.in_chans,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CheckpointMeta:
        return cls(
            model_cfg=dict(d["model_cfg"]),
            class_names=tuple(d["class_names"]),
            has_va=bool(d.get("has_va", True)),
            input_size=int(d["input_size"]),
            in_chans=int(d["in_chans"]),
            mean=tuple(float(v) for v in d.get("mean", (0.5,))),
            std=tuple(float(v) for v in d.get("std", (0.5,))),
        )


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint dict safely (``weights_only=True``); clear errors otherwise."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"checkpoint not found: {p} (expected a .ckpt written by fersuite-train)"
        )
    try:
        ckpt = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise PretrainedWeightsError(
            f"refusing to load {p}: not a plain-data checkpoint (weights_only=True failed: {first})"
        ) from exc
    if not isinstance(ckpt, dict):
        raise PretrainedWeightsError(f"{p}: expected a checkpoint dict, got {type(ckpt).__name__}")
    return ckpt


def checkpoint_meta(ckpt: dict[str, Any], source: str = "<checkpoint>") -> CheckpointMeta:
    meta = ckpt.get(META_KEY)
    if not isinstance(meta, dict) or "model_cfg" not in meta:
        raise PretrainedWeightsError(
            f"{source} has no '{META_KEY}' metadata (model config, classes, input spec); "
            "was it written by fersuite-train?"
        )
    return CheckpointMeta.from_dict(meta)


def net_state_dict(ckpt: dict[str, Any], prefix: str = "net.") -> dict[str, torch.Tensor]:
    """The model's weights inside a LightningModule state dict (``net.`` keys)."""
    sd = ckpt.get("state_dict", ckpt)
    out = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    return {k.replace("_orig_mod.", ""): v for k, v in out.items()}


def load_model_from_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, CheckpointMeta]:
    """Rebuild the trained network from a fersuite checkpoint (eval mode)."""
    ckpt = read_checkpoint(path)
    meta = checkpoint_meta(ckpt, str(path))
    cfg = dict(meta.model_cfg)
    # The trained weights replace any pretrained ones: never read the original file again.
    if "pretrained" in cfg:
        cfg["pretrained"] = False
    if "pretrained_path" in cfg:
        cfg["pretrained_path"] = None
    net: nn.Module = instantiate(cfg, num_classes=len(meta.class_names))
    sd = net_state_dict(ckpt)
    problem = describe_mismatch(net, sd)
    if problem:
        raise PretrainedWeightsError(f"{path}: weights do not fit the configured model: {problem}")
    net.load_state_dict(sd, strict=True)
    net.to(map_location).eval()
    return net, meta
