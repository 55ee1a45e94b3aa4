"""Evaluating a trained checkpoint, on its own dataset or on another one, by class name.

``fersuite-eval ckpt_path=<file.ckpt> data=<name> …`` (:func:`evaluate`; its alias
``fersuite-train train=false ckpt_path=<file.ckpt> …``) tests a checkpoint and writes
``metrics.json`` with the ``test/*`` keys of a training run. The model (architecture, input
size, channels) and the normalisation come from the checkpoint's plain-data metadata, so the
data pipeline is built for the model that was trained, whatever ``model=`` says. When the
dataset's classes differ from the checkpoint's (a FER2013 model on RAF-DB, an AffectNet-8 model
on FER2013), :class:`ClassRemap` reorders the logits into the dataset's class order through the
central label vocabulary (:mod:`fersuite.labels`); classes the dataset lacks are dropped, which
renormalises the softmax over the remaining ones. A dataset class the model never learnt is an
error naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from fersuite.card import ModelCard
from fersuite.checkpoint import checkpoint_meta, read_checkpoint, trained_model_card
from fersuite.config import ConfigError
from fersuite.labels import canonical_name, mapping_indices
from fersuite.types import AffectOutput

__all__ = [
    "ClassRemap",
    "adopt_checkpoint_model",
    "class_index_map",
    "evaluate",
    "same_classes",
    "wants_checkpoint_eval",
]


def wants_checkpoint_eval(cfg: DictConfig) -> bool:
    """``train=false`` with a checkpoint file (not ``last``/resume): evaluate that file."""
    ckpt = cfg.get("ckpt_path")
    return not cfg.get("train", True) and bool(ckpt) and str(ckpt) != "last"


def adopt_checkpoint_model(cfg: DictConfig) -> ModelCard:
    """The one config change of an evaluation, before it starts: ``cfg.model`` becomes the
    checkpoint's (so ``run_info.json`` records what was evaluated) and the data's input
    (``data.image_size``, ``in_chans``, ``mean``, ``std``) the checkpoint's."""
    path = str(cfg.ckpt_path)
    if not Path(path).is_file():
        raise ConfigError(f"ckpt_path={path}: no such checkpoint file (expected a .ckpt)")
    meta = checkpoint_meta(read_checkpoint(path), path)
    # Checked before anything uses it: the registry's factory and plain values only.
    model_cfg = trained_model_card(meta.model_cfg, path)
    with open_dict(cfg):
        cfg.model = OmegaConf.create(model_cfg)
        if cfg.get("data") is not None:
            for key, value in (
                ("image_size", int(meta.input_size)),
                ("in_chans", int(meta.in_chans)),
                ("mean", list(meta.mean)),
                ("std", list(meta.std)),
            ):
                if key in cfg.data:
                    cfg.data[key] = value
    return meta


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test the checkpoint ``cfg.ckpt_path`` on ``cfg.data``; return (and write to
    ``metrics.json``) its metrics, keyed as a training run's ``test/*``."""
    from hydra.utils import instantiate

    from fersuite.modules.affect_module import build_affect_module
    from fersuite.training import finish_run, make_trainer, prepare_run, trained_net

    adopt_checkpoint_model(cfg)
    out_dir, _ = prepare_run(cfg, resume=False)
    datamodule = instantiate(cfg.data)
    net, meta = trained_net(str(cfg.ckpt_path), datamodule)
    module = build_affect_module(cfg, datamodule, net=net, net_has_va=meta.has_va)
    trainer, callbacks = make_trainer(cfg, out_dir, extra={"evaluated": str(cfg.ckpt_path)})
    trainer.test(module, datamodule=datamodule, weights_only=True)
    values: dict[str, Any] = dict(trainer.callback_metrics)
    return finish_run(trainer, callbacks, values, out_dir, {"checkpoint": str(cfg.ckpt_path)})


def class_index_map(model_classes: Sequence[str], data_classes: Sequence[str]) -> list[int]:
    """For each dataset class, the index of the model logit with the same canonical name."""
    try:
        found = mapping_indices(list(data_classes), list(model_classes))
    except ValueError as exc:
        raise ConfigError(f"cannot map classes by name: {exc}") from exc
    missing = [n for n, i in zip(data_classes, found, strict=True) if i is None]
    if missing:
        raise ConfigError(
            f"the checkpoint's model never learnt the dataset class(es) {', '.join(missing)} "
            f"(model classes: {', '.join(model_classes)}); evaluate on a dataset/num_classes "
            "whose classes the model knows (e.g. data.num_classes=7 drops contempt)"
        )
    return [int(i) for i in found if i is not None]


class ClassRemap(nn.Module):
    """Wraps a trained network so its expression logits follow another class order.

    Valence and arousal pass through unchanged. ``num_classes`` is the dataset's.
    """

    def __init__(
        self, net: nn.Module, model_classes: Sequence[str], data_classes: Sequence[str]
    ) -> None:
        super().__init__()
        self.net = net
        self.model_classes = tuple(canonical_name(n) for n in model_classes)
        self.data_classes = tuple(data_classes)
        self.register_buffer(
            "index", torch.tensor(class_index_map(model_classes, data_classes)), persistent=False
        )
        self.num_classes = len(self.data_classes)

    def forward(self, x: torch.Tensor) -> AffectOutput:
        out: Any = self.net(x)
        return AffectOutput(out.expression.index_select(1, self.index), out.valence, out.arousal)


def same_classes(a: Sequence[str], b: Sequence[str]) -> bool:
    """True when both lists name the same classes in the same order."""
    try:
        return [canonical_name(n) for n in a] == [canonical_name(n) for n in b]
    except ValueError:
        return list(a) == list(b)
