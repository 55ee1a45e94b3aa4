"""tta=hflip: validation/test average the logits and VA of the image and its mirror image."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import pytest
import torch
from omegaconf import open_dict
from torch import nn
from torch.utils.data import DataLoader

from fersuite.config import validate_config
from fersuite.errors import ConfigError
from fersuite.losses import AffectLoss
from fersuite.modules.affect_module import AffectModule
from fersuite.runs.setup import make_trainer
from fersuite.types import AffectOutput

CLASSES = ("a", "b", "c")


class LeftRight(nn.Module):
    """Logits and VA from a fixed linear map of the pixels: mirror images disagree."""

    num_classes = 3

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2 * 4 * 4, 5)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(5, 32, generator=torch.Generator().manual_seed(0)))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> AffectOutput:
        y = self.fc(x.flatten(1))
        return AffectOutput(y[:, :3], torch.tanh(y[:, 3]), torch.tanh(y[:, 4]))


def _module(tta: str) -> AffectModule:
    return AffectModule(
        net=LeftRight(),
        loss=AffectLoss(),
        optimizer=partial(torch.optim.SGD, lr=0.1),
        class_names=CLASSES,
        tta=tta,
    )


def _images() -> torch.Tensor:
    x = torch.zeros(6, 2, 4, 4)
    x[:, :, :, :2] = torch.arange(1.0, 7.0).view(6, 1, 1, 1) / 20  # bright left half only
    return x


def test_hflip_averages_logits_and_va_and_changes_asymmetric_predictions() -> None:
    x = _images()
    plain, tta = _module("none"), _module("hflip")
    a, b = plain.evaluate_forward(x), tta.evaluate_forward(x)
    net = plain.net
    mirrored = net(torch.flip(x, dims=(-1,)))
    for field in AffectOutput._fields:
        expected = (getattr(net(x), field) + getattr(mirrored, field)) / 2
        torch.testing.assert_close(getattr(b, field), expected)
        assert not torch.allclose(getattr(a, field), getattr(b, field))
    # A left-right symmetric image predicts the same with or without TTA.
    sym = torch.ones(2, 2, 4, 4)
    torch.testing.assert_close(plain.evaluate_forward(sym), tta.evaluate_forward(sym))


def _test_metrics(tta: str, tmp_path: Path) -> dict[str, float]:
    x = _images()
    batches = [
        {
            "image": x,
            "expression": torch.tensor([0, 1, 2, 0, 1, 2]),
            "valence": torch.linspace(-0.5, 0.5, 6),
            "arousal": torch.linspace(0.5, -0.5, 6),
        }
    ]
    trainer = L.Trainer(
        default_root_dir=tmp_path, accelerator="cpu", logger=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.test(_module(tta), dataloaders=DataLoader(batches, batch_size=None))
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def test_same_metric_keys_with_and_without_tta(tmp_path: Path) -> None:
    plain, tta = _test_metrics("none", tmp_path), _test_metrics("hflip", tmp_path)
    assert plain.keys() == tta.keys() and "test/acc" in tta and "test/valence_ccc" in tta
    assert plain["test/loss"] != pytest.approx(tta["test/loss"])


def test_tta_is_recorded_in_run_info(cfg_factory: Any, tmp_path: Path) -> None:
    cfg = cfg_factory(["tta=hflip", "logger=none", "callbacks=none"])
    with open_dict(cfg):
        del cfg["hydra"]  # a job's config
    make_trainer(cfg, tmp_path)
    assert json.loads((tmp_path / "run_info.json").read_text())["tta"] == "hflip"


def test_bad_tta_is_one_line(cfg_factory: Any) -> None:
    with pytest.raises(ConfigError, match=r"^tta='vflip'; expected 'none' or 'hflip'$"):
        validate_config(cfg_factory(["tta=vflip"]))
