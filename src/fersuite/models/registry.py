"""One registry for every architecture of the zoo: ``create_model(arch, **kwargs)``."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from torch import nn

#: arch name -> "module:attribute" of its constructor (imported lazily).
_REGISTRY: dict[str, str] = {
    "timm": "fersuite.models.timm_backbone:TimmAffectNet",
    "mit_fer": "fersuite.models.mit_fer:MiTFER",
    "lightweight_cnn": "fersuite.models.lightweight_cnn:LightweightCNN",
    "emonet": "fersuite.models.emonet:EmoNet",
}


def register_model(arch: str, target: str) -> None:
    """Register ``target`` ("package.module:Class") under ``arch``."""
    _REGISTRY[arch] = target


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_model_class(arch: str) -> Callable[..., nn.Module]:
    if arch not in _REGISTRY:
        raise ValueError(f"model.arch={arch!r} is not a known architecture; known: {list_models()}")
    module_name, attr = _REGISTRY[arch].split(":")
    return getattr(importlib.import_module(module_name), attr)  # type: ignore[no-any-return]


def create_model(arch: str, **kwargs: Any) -> nn.Module:
    """Build the architecture ``arch`` with uniform keyword arguments
    (``num_classes``, ``in_chans``, ``input_size``, ``pretrained_path``, ...)."""
    return get_model_class(arch)(**kwargs)
