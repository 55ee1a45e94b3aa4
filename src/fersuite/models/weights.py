"""Loading local weight files safely (never unpickling arbitrary objects)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from fersuite.errors import PretrainedWeightsError

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module", "net")
_PREFIXES = ("module.", "_orig_mod.", "model.", "net.")


def require_local_weights(pretrained: bool, path: str | None, what: str) -> None:
    """Fail at once when pretrained weights are asked for without a local file."""
    if pretrained and not path:
        raise PretrainedWeightsError(
            f"{what}: pretrained=true needs a local weights file (model.pretrained_path=<file>); "
            "fersuite never downloads weights from a hub"
        )


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a .safetensors / .pth / .pt / .bin / .ckpt file into a flat tensor state dict.

    Pickled files are read with ``weights_only=True``: a file that would execute code is refused.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"weights file not found: {p} (expected a .safetensors, .pth, .pt, .bin or .ckpt file)"
        )
    if p.suffix == ".safetensors":
        return load_file(str(p))
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PretrainedWeightsError(
            f"refusing to load {p}: it is not a plain tensor checkpoint loadable with "
            f"weights_only=True ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        ) from exc
    return unwrap_state_dict(obj, source=str(p))


def unwrap_state_dict(obj: object, source: str = "<state dict>") -> dict[str, torch.Tensor]:
    """Find the tensor mapping inside common checkpoint wrappers."""
    for _ in range(3):
        if (
            isinstance(obj, Mapping)
            and obj
            and all(isinstance(v, torch.Tensor) for v in obj.values())
        ):
            return dict(obj)
        if isinstance(obj, Mapping):
            inner = next(
                (obj[k] for k in _WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None
            )
            if inner is None:
                break
            obj = inner
    if isinstance(obj, Mapping):
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    raise PretrainedWeightsError(f"{source}: no tensor state dict found in the file")


def strip_prefixes(
    sd: Mapping[str, torch.Tensor], prefixes: tuple[str, ...] = _PREFIXES
) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes (``module.``, ``_orig_mod.``, ...) shared by every key."""
    out = dict(sd)
    changed = True
    while changed and out:
        changed = False
        for pre in prefixes:
            if all(k.startswith(pre) for k in out):
                out = {k[len(pre) :]: v for k, v in out.items()}
                changed = True
    return out


def describe_mismatch(model: nn.Module, sd: Mapping[str, torch.Tensor], limit: int = 5) -> str:
    """A readable summary of missing / unexpected / wrongly shaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[:limit]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:limit]})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches (e.g. {shapes[:limit]})")
    return "; ".join(parts)


def load_into(
    model: nn.Module, sd: Mapping[str, torch.Tensor], source: str, strict: bool = True
) -> None:
    """Load ``sd`` into ``model``; on any mismatch raise one readable error."""
    problem = describe_mismatch(model, sd)
    own = model.state_dict()
    shape_bad = any(k in own and tuple(sd[k].shape) != tuple(own[k].shape) for k in sd)
    if problem and (strict or shape_bad):
        raise PretrainedWeightsError(f"{source} does not fit {type(model).__name__}: {problem}")
    model.load_state_dict(dict(sd), strict=strict)
