"""Rebuilding a model from a fersuite checkpoint, without running anything the file says.

Every checkpoint written by ``fersuite-train`` carries, under the key ``"fersuite"``, its
:class:`~fersuite.card.ModelCard` as plain data only: the model config (``model_cfg``: an
architecture name of the model registry plus plain keyword values), the class names, the
input spec, the data normalisation and the face crop.
``torch.load(weights_only=True)`` can read it, so a crafted pickle is refused instead of
executed. The model config is never given to Hydra's ``instantiate`` (a nested ``_target_``
would run, e.g. ``builtins.open(path, "w")``): :func:`check_model_card` accepts only the
registry's own factory at the top and plain values below it, and :func:`build_model_from_card`
builds through :func:`fersuite.models.registry.create_model`. Every path that rebuilds a model
from a file someone else made (export, predict and its sidecars, ``train=false ckpt_path=``,
distillation teachers) goes through these two functions.
"""

from __future__ import annotations

import copy
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fersuite.card import BOUNDS, ModelCard
from fersuite.errors import ModelCardError, ModelCardFormatError, PretrainedWeightsError
from fersuite.models.weights import describe_mismatch

META_KEY = "fersuite"

#: The only ``_target_`` a stored model config may name (at its top level).
MODEL_FACTORY = "fersuite.models.registry.create_model"
_PLAIN = "plain values (str, int, float, bool, None and lists/dicts of them)"
_KEYWORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")


def _refuse(source: str, what: str) -> ModelCardError:
    return ModelCardError(f"{source}: refusing to rebuild the model: {what}")


def _check_plain(
    value: Any, key: str, source: str, depth: int = 1, seen: list[int] | None = None
) -> Any:
    """A deep copy of ``value`` when it is plain data within the card's bounds (depth, number
    of values, string length, finite numbers); a one-line refusal otherwise."""
    seen = [0] if seen is None else seen
    seen[0] += 1
    if depth > BOUNDS.max_depth or seen[0] > BOUNDS.max_nodes:
        raise _refuse(
            source,
            f"{key}: nested too deep or too large (at most {BOUNDS.max_depth} levels and "
            f"{BOUNDS.max_nodes} values)",
        )
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise _refuse(source, f"{key} has a non-string key of type {type(k).__name__}")
            if not _KEYWORD.fullmatch(k):
                raise _refuse(source, f"{key} has the key {_short(k)}; expected a keyword name")
            sub = f"{key}.{k}"
            if k == "_target_":
                raise _refuse(
                    source,
                    f"{sub}={_short(v)}: a nested _target_ is never run; expected {_PLAIN}",
                )
            if k.startswith("_") and k.endswith("_"):
                raise _refuse(source, f"{sub}: Hydra keys are not accepted; expected {_PLAIN}")
            out[k] = _check_plain(v, sub, source, depth + 1, seen)
        return out
    if isinstance(value, list | tuple):
        return [
            _check_plain(v, f"{key}[{i}]", source, depth + 1, seen) for i, v in enumerate(value)
        ]
    if isinstance(value, str):
        if "${" in value:
            raise _refuse(source, f"{key}={_short(value)}: an interpolation is not a plain value")
        if len(value) > BOUNDS.max_str_len:
            raise _refuse(source, f"{key} is {len(value)} characters; at most {BOUNDS.max_str_len}")
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise _refuse(source, f"{key}={value}; expected a finite number")
    if isinstance(value, int) and value.bit_length() > 63:
        raise _refuse(source, f"{key}: an integer of {value.bit_length()} bits; at most 64")
    if value is None or isinstance(value, bool | int | float):
        return value
    raise _refuse(source, f"{key} is a {type(value).__name__}, not one of the {_PLAIN}")


def _short(value: Any) -> str:
    """A short repr of a value from a file (a container is not recursed into)."""
    if isinstance(value, Mapping):
        return "{...}"
    if isinstance(value, list | tuple):
        return "[...]"
    if isinstance(value, int) and value.bit_length() > 64:
        return "<a large integer>"
    if value is None or isinstance(value, bool | int | float | str):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return f"<a {type(value).__name__}>"


def check_model_card(model_cfg: Any, source: str) -> dict[str, Any]:
    """The checked, plain copy of a model config read from ``source`` (a file someone made).

    Accepted: an optional top-level ``_target_`` equal to :data:`MODEL_FACTORY`, ``arch`` a
    registered architecture, and keyword values that are plain data and keys of that
    architecture. Anything else (another ``_target_`` at any depth, other Hydra keys, objects,
    interpolations) raises :class:`ModelCardError` with one line naming ``source``; nothing
    from the file is imported or called.
    """
    from fersuite.config_schema import check_target_node
    from fersuite.errors import ConfigError
    from fersuite.models.registry import kwarg_problem, list_models

    if not isinstance(model_cfg, Mapping):
        raise _refuse(source, f"model_cfg is a {type(model_cfg).__name__}; expected a mapping")
    target = model_cfg.get("_target_", MODEL_FACTORY)
    if target != MODEL_FACTORY:
        raise _refuse(
            source,
            f"model_cfg._target_={_short(target)}; only {MODEL_FACTORY} (the model registry) "
            "is accepted",
        )
    body = {k: v for k, v in model_cfg.items() if k != "_target_"}
    card: dict[str, Any] = _check_plain(body, "model_cfg", source)
    arch = card.get("arch")
    if not isinstance(arch, str) or arch not in list_models():
        raise _refuse(source, f"model_cfg.arch={_short(arch)}; expected one of {list_models()}")
    card = {"_target_": MODEL_FACTORY, **card}
    try:  # keys and simple types against the architecture's signature (imports nothing else)
        check_target_node("model_cfg", card)
    except ConfigError as exc:
        raise _refuse(source, str(exc)[:300]) from exc
    # the ranges of what sizes the model (before anything is built)
    problem = kwarg_problem(arch, {k: v for k, v in card.items() if k not in ("_target_", "arch")})
    if problem:
        raise _refuse(source, f"model_cfg.{problem}")
    return card


def build_model_from_card(model_cfg: Any, source: str, **overrides: Any) -> nn.Module:
    """Check ``model_cfg`` (:func:`check_model_card`) and build it through the model registry;
    ``overrides`` (e.g. ``num_classes``) are the caller's own keyword values."""
    from fersuite.models.registry import create_model

    card = check_model_card(model_cfg, source)
    kwargs = {k: v for k, v in card.items() if k not in ("_target_", "arch")}
    kwargs.update(overrides)
    arch = str(card["arch"])
    try:
        return create_model(arch, **kwargs)
    except (TypeError, ValueError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise ModelCardError(f"{source}: model_cfg does not build a {arch} model: {first}") from exc


def trained_model_card(model_cfg: Any, source: str) -> dict[str, Any]:
    """The checked card of a trained model: its weights come from the checkpoint, so the
    original pretrained weights (``pretrained``, ``pretrained_path``) are never read again."""
    card = check_model_card(model_cfg, source)
    if "pretrained" in card:
        card["pretrained"] = False
    if "pretrained_path" in card:
        card["pretrained_path"] = None
    return copy.deepcopy(card)


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


def checkpoint_card(ckpt: dict[str, Any], source: str = "<checkpoint>") -> ModelCard:
    """The checkpoint's :class:`~fersuite.card.ModelCard` (also from pre-card checkpoints)."""
    meta = ckpt.get(META_KEY)
    if not isinstance(meta, dict) or "model_cfg" not in meta:
        raise PretrainedWeightsError(
            f"{source} has no '{META_KEY}' metadata (model config, classes, input spec); "
            "was it written by fersuite-train?"
        )
    try:
        return ModelCard.from_dict(meta, source)
    except ModelCardFormatError as exc:
        raise PretrainedWeightsError(str(exc)) from exc


def net_state_dict(ckpt: dict[str, Any], prefix: str = "net.") -> dict[str, torch.Tensor]:
    """The model's weights inside a LightningModule state dict (``net.`` keys)."""
    sd = ckpt.get("state_dict", ckpt)
    out = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    return {k.replace("_orig_mod.", ""): v for k, v in out.items()}


def load_model_from_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelCard]:
    """Rebuild the trained network and read its model card from a fersuite checkpoint
    (eval mode)."""
    ckpt = read_checkpoint(path)
    meta = checkpoint_card(ckpt, str(path))
    card = trained_model_card(meta.model_cfg, str(path))
    net = build_model_from_card(card, str(path), num_classes=len(meta.class_names))
    sd = net_state_dict(ckpt)
    problem = describe_mismatch(net, sd)
    if problem:
        raise PretrainedWeightsError(f"{path}: weights do not fit the configured model: {problem}")
    net.load_state_dict(sd, strict=True)
    net.to(map_location).eval()
    return net, meta
