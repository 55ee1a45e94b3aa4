"""early_stopping.patience: stops before max_epochs, in the monitor's own direction."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping

from fersuite.callbacks.early_stopping import early_stopping_callback
from fersuite.config import validate_config
from fersuite.data.synthetic_datamodule import SyntheticDataModule
from fersuite.errors import ConfigError
from fersuite.losses import AffectLoss
from fersuite.models.registry import create_model
from fersuite.modules.affect_module import AffectModule
from fersuite.runs.builders import build_callbacks


def test_stops_before_max_epochs_when_the_monitor_stalls(tmp_path: Path) -> None:
    torch.manual_seed(0)
    dm = SyntheticDataModule(
        train_size=16, val_size=16, test_size=16, batch_size=16, num_workers=0,
        image_size=48, in_chans=1, cache_dir=None,
    )  # fmt: skip
    net = create_model("lightweight_cnn", num_classes=8, in_chans=1, input_size=48, width_mult=0.5)
    # lr=0 and frozen norm statistics: the weights never change, so val/loss never improves
    # after the first epoch.
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.0
    module = AffectModule(
        net=net,
        loss=AffectLoss(),
        optimizer=partial(torch.optim.SGD, lr=0.0),
        class_names=dm.class_names,
        monitor="val/loss",
    )
    stopper = early_stopping_callback(monitor="val/loss", patience=2)
    assert isinstance(stopper, EarlyStopping) and stopper.mode == "min"
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        callbacks=[stopper],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        max_epochs=20,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=dm)
    assert trainer.should_stop
    assert trainer.current_epoch == 3  # epoch 0 sets the best, epochs 1 and 2 wait: stop
    assert stopper.stopped_epoch == 2


@pytest.mark.parametrize(
    ("overrides", "mode"),
    [(["monitor=val/loss"], "min"), ([], "max"), (["monitor=val/loss", "monitor_mode=max"], "max")],
)
def test_config_builds_it_on_the_monitor(cfg_factory: Any, overrides: list[str], mode: str) -> None:
    assert not any(
        isinstance(c, EarlyStopping) for c in build_callbacks(cfg_factory(overrides), False)
    )
    cfg = cfg_factory([*overrides, "early_stopping.patience=3"])
    validate_config(cfg)
    (cb,) = [c for c in build_callbacks(cfg, has_logger=False) if isinstance(c, EarlyStopping)]
    assert (cb.monitor, cb.mode, cb.patience) == (cfg.monitor, mode, 3)


@pytest.mark.parametrize("value", ["0", "1.5", "-2"])
def test_bad_patience_is_one_line(cfg_factory: Any, value: str) -> None:
    with pytest.raises(ConfigError, match=r"^early_stopping\.patience=.*integer >= 1"):
        validate_config(cfg_factory([f"early_stopping.patience={value}"]))
