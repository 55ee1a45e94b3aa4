"""ema.decay: the EMA weights are the ones validated, checkpointed and tested; resume restores
both the EMA and the raw weights exactly."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from fersuite.callbacks.ema import EMACallback
from fersuite.config import validate_config
from fersuite.data.synthetic_datamodule import SyntheticDataModule
from fersuite.errors import ConfigError
from fersuite.losses import AffectLoss
from fersuite.models.registry import create_model
from fersuite.modules.affect_module import AffectModule
from fersuite.runs.builders import build_callbacks


def _setup() -> tuple[AffectModule, SyntheticDataModule]:
    torch.manual_seed(0)
    dm = SyntheticDataModule(
        train_size=32, val_size=16, test_size=16, batch_size=16, num_workers=0,
        image_size=48, in_chans=1, cache_dir=None,
    )  # fmt: skip
    net = create_model(
        "lightweight_cnn",
        num_classes=8,
        in_chans=1,
        input_size=48,
        width_mult=0.25,
        expansion_channels=32,
    )
    module = AffectModule(
        net=net,
        loss=AffectLoss(),
        optimizer=partial(torch.optim.SGD, lr=0.1),
        class_names=dm.class_names,
        monitor="val/loss",
    )
    return module, dm


class Probe(L.Callback):
    """Copies of the module's weights at the points the test asks about."""

    def __init__(self) -> None:
        self.val: list[dict[str, torch.Tensor]] = []
        self.val_steps: list[int] = []
        self.ema_at_val: list[dict[str, torch.Tensor]] = []
        self.test: dict[str, torch.Tensor] = {}
        self.train_start: dict[str, torch.Tensor] = {}
        self.ema_at_train_start: dict[str, torch.Tensor] = {}

    @staticmethod
    def _copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in module.state_dict().items()}

    def _ema(self, trainer: L.Trainer) -> EMACallback:
        return next(c for c in trainer.callbacks if isinstance(c, EMACallback))

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: Any, *a: Any) -> None:
        self.val_steps.append(trainer.global_step)
        self.val.append(self._copy(pl_module))
        self.ema_at_val.append(self._copy(self._ema(trainer)._average_model.module))

    def on_test_batch_start(self, trainer: L.Trainer, pl_module: Any, *a: Any) -> None:
        self.test = self._copy(pl_module)

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        self.train_start = self._copy(pl_module)
        self.ema_at_train_start = self._copy(self._ema(trainer)._average_model.module)


def _trainer(tmp_path: Path, callbacks: list[L.Callback], max_epochs: int) -> L.Trainer:
    return L.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_epochs=max_epochs,
        limit_val_batches=1,
        num_sanity_val_steps=0,
    )


def _weights(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in sd.items() if k.startswith("net.") and v.is_floating_point()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    a, b = _weights(a), _weights(b)
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_ema_weights_differ_from_raw_and_are_validated_checkpointed_and_tested(
    tmp_path: Path,
) -> None:
    module, dm = _setup()
    probe = Probe()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ck", monitor="val/loss", save_last=True)
    trainer = _trainer(tmp_path, [EMACallback(decay=0.5), probe, ckpt], max_epochs=2)
    trainer.fit(module, datamodule=dm)

    saved = torch.load(ckpt.best_model_path, weights_only=True)
    ema, raw = saved["state_dict"], saved["current_model_state"]
    assert not _same(ema, raw)  # the average is not the raw weights
    # The validation before the checkpoint ran on the EMA weights of that moment, not on the
    # raw ones (which the averaged model holds while they are swapped).
    i = probe.val_steps.index(saved["global_step"])
    assert _same(probe.val[i], ema)
    assert not _same(probe.val[i], raw)
    assert _same(probe.ema_at_val[i], raw)

    trainer.test(module, datamodule=dm, ckpt_path=ckpt.best_model_path, weights_only=True)
    assert _same(probe.test, ema)  # the test evaluated the checkpoint's EMA weights
    assert not _same(probe.test, raw)


def test_resume_restores_ema_and_raw_weights_exactly(tmp_path: Path) -> None:
    module, dm = _setup()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True)
    _trainer(tmp_path, [EMACallback(decay=0.5), ckpt], max_epochs=1).fit(module, datamodule=dm)
    last = torch.load(tmp_path / "ck" / "last.ckpt", weights_only=True)

    module2, dm2 = _setup()
    probe = Probe()
    trainer = _trainer(tmp_path, [EMACallback(decay=0.5), probe], max_epochs=2)
    trainer.fit(module2, datamodule=dm2, ckpt_path=tmp_path / "ck" / "last.ckpt", weights_only=True)
    assert _same(probe.train_start, last["current_model_state"])
    assert _same(probe.ema_at_train_start, last["state_dict"])
    assert not _same(last["state_dict"], last["current_model_state"])


def test_config_builds_the_callback_only_when_on(cfg_factory: Any) -> None:
    off = build_callbacks(cfg_factory([]), has_logger=False)
    assert not any(isinstance(c, EMACallback) for c in off)
    cfg = cfg_factory(["ema.decay=0.99"])
    validate_config(cfg)
    (cb,) = [c for c in build_callbacks(cfg, has_logger=False) if isinstance(c, EMACallback)]
    assert cb._kwargs["avg_fn"] is not None


@pytest.mark.parametrize("value", ["1.0", "0", "-0.5", "true"])
def test_bad_decay_is_one_line(cfg_factory: Any, value: str) -> None:
    with pytest.raises(ConfigError, match=r"^ema\.decay=.*expected a number in \(0, 1\)") as exc:
        validate_config(cfg_factory([f"ema.decay={value}"]))
    assert "\n" not in str(exc.value)
