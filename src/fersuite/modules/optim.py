"""Optimizer parameter groups: no weight decay on norms, biases and embeddings.

Decoupled weight decay (AdamW) and L2 decay (SGD) are meant for weight matrices and
kernels. Following timm (and the papers' training recipes built on it), every 1-D parameter
(norm weights and biases, all biases) and every parameter a module lists in its
``no_weight_decay()`` (position embeddings, class tokens, relative-position bias tables, as
timm's ViT, Swin, EfficientFormer, ... define them) goes to a group with
``weight_decay=0``. The other parameters keep the optimizer's configured ``weight_decay``.
The split itself is timm's :func:`~timm.optim.param_groups_weight_decay`; this module only
collects the ``no_weight_decay()`` names of every submodule under their full names (the
zoo wraps timm models, e.g. ``net.backbone.pos_embed``).

MiT (SegFormer) has no position embeddings (its Mix-FFN's depthwise convolution carries
position), so for MiT-FER the rule excludes exactly its norm weights and biases.
"""

from __future__ import annotations

from typing import Any

from timm.optim import param_groups_weight_decay
from torch import nn

#: Any non-zero value: it only makes the timm helper split the parameters; the decaying
#: group then inherits the optimizer's own ``weight_decay``.
_SPLIT = 1.0


def no_weight_decay_names(module: nn.Module) -> set[str]:
    """Full-name patterns of the parameters that submodules exclude from weight decay."""
    names: set[str] = set()
    for prefix, sub in module.named_modules():
        listed = getattr(sub, "no_weight_decay", None)
        if not callable(listed):
            continue
        for name in listed():
            full = f"{prefix}.{name}" if prefix else str(name)
            names.update((full, f"{full}.*"))  # a parameter, or every parameter of a submodule
    return names


def weight_decay_param_groups(module: nn.Module) -> list[dict[str, Any]]:
    """Trainable parameters of ``module`` in two groups for any ``torch.optim`` optimizer:
    ``weight_decay=0`` for 1-D parameters and ``no_weight_decay()`` names, and the rest with
    no ``weight_decay`` key (so the optimizer's configured value applies)."""
    groups = param_groups_weight_decay(
        module, _SPLIT, no_weight_decay_list=sorted(no_weight_decay_names(module))
    )
    for group in groups:
        if group["weight_decay"] != 0.0:
            del group["weight_decay"]
    return groups
