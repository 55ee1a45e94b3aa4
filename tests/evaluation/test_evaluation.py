"""Evaluating a checkpoint on another dataset: classes mapped by name, model from the ckpt."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, open_dict
from torch import nn

from fersuite.errors import ConfigError
from fersuite.labels import CANONICAL_CLASSES, class_index_map
from fersuite.models.heads import ClassRemap
from fersuite.types import AffectOutput
from tests.conftest import TINY
from tests.data.fixtures import write_fer2013

FER2013 = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


class _Fixed(nn.Module):
    """Logits equal to the class index, so a remap can be read off the output."""

    num_classes = len(CANONICAL_CLASSES)

    def forward(self, x: torch.Tensor) -> AffectOutput:
        b = x.shape[0]
        logits = torch.arange(self.num_classes, dtype=torch.float32).repeat(b, 1)
        return AffectOutput(logits, torch.zeros(b), torch.ones(b))


def test_remap_reorders_by_name_and_drops_extra_classes() -> None:
    remap = ClassRemap(_Fixed(), CANONICAL_CLASSES, FER2013)
    out = remap(torch.zeros(2, 1, 8, 8))
    expected = [CANONICAL_CLASSES.index(n) for n in ("anger", "disgust", "fear", "happy")]
    expected += [CANONICAL_CLASSES.index(n) for n in ("sad", "surprise", "neutral")]
    assert out.expression.shape == (2, 7)
    assert out.expression[0].tolist() == [float(i) for i in expected]
    assert remap.num_classes == 7
    assert out.arousal.tolist() == [1.0, 1.0]  # valence/arousal pass through
    # softmax over the kept logits == the model's softmax renormalised without contempt
    full = torch.softmax(torch.arange(8.0), 0)
    kept = full[torch.tensor(expected)] / full[torch.tensor(expected)].sum()
    assert torch.allclose(torch.softmax(out.expression[0], 0), kept)


def test_a_class_the_model_never_learnt_is_named() -> None:
    with pytest.raises(ConfigError, match=r"never learnt the dataset class\(es\) contempt"):
        class_index_map(FER2013, CANONICAL_CLASSES)


def _job(cfg: DictConfig) -> DictConfig:
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def _test_accuracy(ckpt: Path, cfg: DictConfig) -> float:
    """Reference: the checkpoint's network over the dataset's test loader, mapped by hand."""
    from hydra.utils import instantiate

    from fersuite.checkpoint import load_model_from_checkpoint

    net, meta = load_model_from_checkpoint(ckpt)
    dm = instantiate(cfg.data)
    dm.setup("test")
    names = [{"angry": "anger"}.get(n, n) for n in FER2013]
    order = [list(meta.class_names).index(n) for n in names]
    correct = total = 0
    with torch.inference_mode():
        for batch in dm.test_dataloader():
            logits = net(batch["image"]).expression[:, torch.tensor(order)]
            correct += int((logits.argmax(1) == batch["expression"]).sum())
            total += len(batch["expression"])
    return correct / total


@pytest.mark.smoke
def test_synthetic_checkpoint_evaluated_on_fer2013(cfg_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from fersuite.training.run import train

    base = [*TINY, "logger=none", "model=lightweight_cnn", "model.width_mult=0.5"]
    train(_job(cfg_factory(base)))
    ckpts = sorted((tmp_path / "run" / "checkpoints").glob("best-*.ckpt"))
    assert ckpts, "the training run wrote no best checkpoint"
    fer = write_fer2013(tmp_path / "fer", n_per_split=10)
    evaluate = [
        "data=fer2013",
        f"data.root={fer.root}",
        "data.num_workers=0",
        "logger=none",
        "train=false",
        f"ckpt_path={ckpts[0]}",
        "callbacks.efficiency.latency_runs=3",
        "callbacks.efficiency.latency_warmup=1",
        "callbacks.efficiency.throughput_batch=4",
        "callbacks.efficiency.throughput_runs=1",
    ]
    cfg = _job(cfg_factory(evaluate))
    metrics = train(cfg)
    assert cfg.model.arch == "lightweight_cnn"
    assert "test/valence_ccc" not in metrics  # FER2013 has no valence/arousal
    assert metrics["test/acc"] == pytest.approx(_test_accuracy(ckpts[0], cfg), abs=1e-6)


def test_missing_checkpoint_is_one_clear_error(cfg_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from fersuite.training.run import train

    cfg = _job(cfg_factory(["train=false", f"ckpt_path={tmp_path / 'nope.ckpt'}"]))
    with pytest.raises(ConfigError, match=r"nope\.ckpt: no such checkpoint file"):
        train(cfg)
