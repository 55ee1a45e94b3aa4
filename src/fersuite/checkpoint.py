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
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fersuite.card import (
    CARD_VERSION,
    FaceCrop,
    ModelCard,
    model_cfg_error,
    plain_model_cfg,
    short_repr,
)
from fersuite.config_schema import check_target_node
from fersuite.errors import (
    ConfigError,
    ModelCardError,
    ModelCardFormatError,
    PretrainedWeightsError,
)
from fersuite.models.registry import create_model, kwarg_problem, list_models
from fersuite.models.weights import describe_mismatch

META_KEY = "fersuite"


#: The only ``_target_`` a stored model config may name (at its top level).
def check_model_card(model_cfg: Any, source: str) -> dict[str, Any]:
    """The checked, plain copy of a model config read from ``source`` (a file someone made).

    Accepted: an optional top-level ``_target_`` equal to :data:`MODEL_FACTORY`, ``arch`` a
    registered architecture, and keyword values that are plain data and keys of that
    architecture. Anything else (another ``_target_`` at any depth, other Hydra keys, objects,
    interpolations) raises :class:`ModelCardError` with one line naming ``source``; nothing
    from the file is imported or called.
    """

    card = plain_model_cfg(model_cfg, source)
    arch = card.get("arch")
    if arch not in list_models():
        raise model_cfg_error(
            source, f"model_cfg.arch={short_repr(arch)}; expected one of {list_models()}"
        )
    try:  # keys and simple types against the architecture's signature (imports nothing else)
        check_target_node("model_cfg", card)
    except ConfigError as exc:
        raise model_cfg_error(source, str(exc)[:300]) from exc
    # the ranges of what sizes the model (before anything is built)
    problem = kwarg_problem(arch, {k: v for k, v in card.items() if k not in ("_target_", "arch")})
    if problem:
        raise model_cfg_error(source, f"model_cfg.{problem}")
    return card


def build_model_from_card(model_cfg: Any, source: str, **overrides: Any) -> nn.Module:
    """Check ``model_cfg`` (:func:`check_model_card`) and build it through the model registry;
    ``overrides`` (e.g. ``num_classes``) are the caller's own keyword values."""

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
        return read_card(meta, source)
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


def read_card(raw: Any, source: str = "<model card>") -> ModelCard:
    """A model card read from a file someone made: :meth:`ModelCard.from_dict` (its shape and
    bounds) and :func:`check_model_card` (a registered architecture, its keyword names and
    ranges). Every reader of a foreign card goes through here."""
    card = ModelCard.from_dict(raw, source)
    check_model_card(card.model_cfg, source)
    return card


def build_model(card: ModelCard, source: str = "<model card>") -> nn.Module:
    """The (untrained) network of ``card``, through the model registry with plain values
    only."""
    return build_model_from_card(card.model_cfg, source, num_classes=len(card.class_names))


def training_card(
    model_cfg: Any,
    class_names: Sequence[str],
    has_va: bool,
    input_size: int,
    in_chans: int,
    mean: Sequence[float],
    std: Sequence[float],
    face_crop: FaceCrop | None = None,
) -> dict[str, Any]:
    """The card a training run stores in its checkpoints, as plain data.

    A model config that is not the registry's (another ``_target_``) is stored as it is, as
    before the card; such a checkpoint cannot be rebuilt by fersuite (it never could)."""
    raw = {
        "card_version": CARD_VERSION,
        "model_cfg": model_cfg,
        "class_names": [str(c) for c in class_names],
        "has_va": bool(has_va),
        "input": {
            "size": int(input_size),
            "channels": int(in_chans),
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in std],
        },
        "face_crop": (face_crop or FaceCrop()).to_dict(),
        "input_size": int(input_size),
        "in_chans": int(in_chans),
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
    }
    try:
        return read_card(raw, "model").to_dict()
    except ModelCardError:
        return raw
