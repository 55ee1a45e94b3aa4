"""Non-finite loss/gradients stop the run (naming step, batch indices and loss term) or are
skipped and counted; checkpoints are never written with non-finite weights."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning.pytorch as L
import pytest
import torch
from omegaconf import DictConfig, open_dict

from fersuite.callbacks.nonfinite_guard import NonFiniteGuard, nonfinite_grads
from fersuite.errors import NonFiniteError

#: 64 samples / batch 16 = 4 steps.
FAST = [
    "trainer.max_epochs=1",
    "data.train_size=64",
    "data.val_size=16",
    "data.test_size=16",
    "data.batch_size=16",
    "data.num_workers=0",
    "model.name=test_resnet",
    "model.input_size=32",
    "logger=none",
    "checkpoint.every_n_train_steps=1",
    "~callbacks.efficiency",
    "~callbacks.progress_bar",
    "~callbacks.reports",
    f"+callbacks.poison._target_={__name__}.PoisonValence",
]


class PoisonValence(L.Callback):
    """Sets one valence target to NaN at the given steps; records what happened."""

    steps: tuple[int, ...] = ()
    seen: dict[int, list[int]] = {}  # noqa: RUF012 - shared with the test on purpose
    unchanged: dict[int, bool] = {}  # noqa: RUF012

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._before = [p.detach().clone() for p in pl_module.parameters()]
        if trainer.global_step in self.steps:
            batch["valence"][0] = float("nan")
            type(self).seen[trainer.global_step] = batch["index"].tolist()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        step = trainer.global_step - 1
        if step in self.steps:
            after = list(pl_module.parameters())
            type(self).unchanged[step] = all(
                torch.equal(a, b) for a, b in zip(self._before, after, strict=True)
            )


@pytest.fixture
def poison(monkeypatch: pytest.MonkeyPatch) -> type[PoisonValence]:
    monkeypatch.setattr(PoisonValence, "seen", {})
    monkeypatch.setattr(PoisonValence, "unchanged", {})
    return PoisonValence


def _job(cfg: DictConfig) -> DictConfig:
    """The job config as the app sees it (compose_train also returns the hydra node)."""
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def _ckpts_finite(run: Path) -> None:
    for ckpt in (run / "checkpoints").glob("*.ckpt"):
        sd = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
        for name, value in sd.items():
            if name.startswith("net.") and value.is_floating_point():
                assert torch.isfinite(value).all(), (ckpt.name, name)


def test_stop_names_step_indices_and_term(cfg_factory, poison, monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from fersuite.training.run import train

    monkeypatch.setattr(poison, "steps", (2,))
    with pytest.raises(NonFiniteError) as info:
        train(_job(cfg_factory(FAST)))
    msg = str(info.value)
    assert "non-finite loss term(s) loss_valence" in msg
    assert "at step 2 (epoch 0)" in msg
    indices = ", ".join(str(i) for i in poison.seen[2])
    assert f"batch indices [{indices}]" in msg
    assert "loss_ce" not in msg and "\n" not in msg
    _ckpts_finite(tmp_path / "run")  # steps 1 and 2 were saved, with finite weights


def test_skip_leaves_weights_untouched_and_counts(
    cfg_factory, poison, monkeypatch, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    from fersuite.training.run import train

    monkeypatch.setattr(poison, "steps", (1, 2))
    metrics = train(_job(cfg_factory([*FAST, "trainer_guard.on_nonfinite=skip"])))
    assert poison.unchanged == {1: True, 2: True}
    assert metrics["guard/skipped_steps"] == 2.0
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["guard/skipped_steps"] == 2.0
    _ckpts_finite(tmp_path / "run")


def test_skip_stops_after_max_skips(cfg_factory, poison, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from fersuite.training.run import train

    monkeypatch.setattr(poison, "steps", (0, 1))
    cfg = cfg_factory([*FAST, "trainer_guard.on_nonfinite=skip", "trainer_guard.max_skips=1"])
    with pytest.raises(NonFiniteError, match=r"at step 1 .*exceed trainer_guard.max_skips=1"):
        train(_job(cfg))


def test_checkpoint_with_nonfinite_weights_is_refused() -> None:
    net = torch.nn.Linear(3, 2)
    with torch.no_grad():
        net.weight[0, 0] = float("inf")
    ckpt = {"state_dict": dict(net.state_dict())}
    trainer = SimpleNamespace(global_step=7)
    with pytest.raises(NonFiniteError, match=r"step 7: weight weight is not finite"):
        NonFiniteGuard().on_save_checkpoint(trainer, net, ckpt)  # type: ignore[arg-type]
    # A metric state at -inf (e.g. MaxMetric before the first value) is not a weight.
    ok = torch.nn.Linear(3, 2)
    NonFiniteGuard().on_save_checkpoint(
        trainer,  # type: ignore[arg-type]
        ok,  # type: ignore[arg-type]
        {"state_dict": {**ok.state_dict(), "best.max_value": torch.tensor(-float("inf"))}},
    )


def test_nonfinite_gradient_with_finite_loss_is_found() -> None:
    net = torch.nn.Linear(3, 2)
    net(torch.ones(1, 3)).sum().backward()
    assert nonfinite_grads(net) == []
    assert net.bias.grad is not None
    net.bias.grad[1] = float("nan")
    assert nonfinite_grads(net) == ["bias"]


def test_bad_guard_settings_are_refused() -> None:
    with pytest.raises(ValueError, match=r"trainer_guard\.on_nonfinite=.ignore."):
        NonFiniteGuard(on_nonfinite="ignore")
    with pytest.raises(ValueError, match=r"trainer_guard\.max_skips=-2"):
        NonFiniteGuard(max_skips=-2)


# -- mixed precision (issue 12, defect 1) ------------------------------------------------------

#: fp16 + GradScaler on the CPU, exactly as the issue reproduces it: the first steps overflow.
FP16_CPU = [
    "trainer.precision=null",
    "+trainer.plugins=[{_target_:lightning.pytorch.plugins.precision.MixedPrecision,"
    "precision:16-mixed,device:cpu,scaler:{_target_:torch.amp.GradScaler,device:cpu,"
    "init_scale:16777216.0}}]",
]


class ScaleProbe(L.Callback):
    """Records the precision plugin, its scaler's scale and the checkpoint IO at fit end."""

    found: dict[str, Any] = {}  # noqa: RUF012 - shared with the test on purpose

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        plugin = trainer.precision_plugin
        scaler = getattr(plugin, "scaler", None)
        type(self).found.update(
            plugin=type(plugin).__name__,
            scale=scaler.get_scale() if scaler is not None else None,
            checkpoint_io=type(trainer.strategy.checkpoint_io).__name__,
        )


def test_fp16_overflow_steps_are_left_to_the_grad_scaler(
    cfg_factory, monkeypatch, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    from fersuite.training.run import train

    monkeypatch.setattr(ScaleProbe, "found", {})
    probe = [f"+callbacks.scale_probe._target_={__name__}.ScaleProbe"]
    metrics = train(_job(cfg_factory([*FAST, *FP16_CPU, *probe])))
    assert ScaleProbe.found["plugin"] == "MixedPrecision"
    assert ScaleProbe.found["scale"] < 16777216.0  # the scaler backed off on its overflows
    # user plugins do not drop the atomic checkpoint writer
    assert ScaleProbe.found["checkpoint_io"] == "AtomicCheckpointIO"
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["guard/amp_overflow_steps"] >= 1
    assert saved["guard/amp_overflow_steps"] == metrics["guard/amp_overflow_steps"]
    assert saved["guard/skipped_steps"] == 0.0
    _ckpts_finite(tmp_path / "run")


def test_fp16_nonfinite_loss_still_stops(cfg_factory, poison, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from fersuite.training.run import train

    monkeypatch.setattr(poison, "steps", (2,))
    expected = r"non-finite loss term\(s\) loss_valence\b.* at step 2 "
    with pytest.raises(NonFiniteError, match=expected):
        train(_job(cfg_factory([*FAST, *FP16_CPU])))


def test_fp32_nonfinite_gradient_still_stops() -> None:
    """Without a grad scaler an inf gradient (finite loss) is a failure, not an overflow."""
    net = torch.nn.Linear(3, 2)
    net(torch.ones(1, 3)).sum().backward()
    assert net.weight.grad is not None
    net.weight.grad[0, 0] = float("inf")
    trainer = SimpleNamespace(global_step=3, current_epoch=0, precision_plugin=object())
    with pytest.raises(NonFiniteError, match=r"non-finite gradient\(s\) of weight at step 3"):
        NonFiniteGuard().on_before_optimizer_step(trainer, net, None)  # type: ignore[arg-type]


def test_one_host_sync_per_step() -> None:
    """The whole check (every loss term and gradient) reads one value back from the device."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class CountReads(TorchDispatchMode):
        reads = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            if func is torch.ops.aten._local_scalar_dense.default:
                type(self).reads += 1
            return func(*args, **(kwargs or {}))

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    net(torch.ones(1, 3)).sum().backward()
    net.last_loss_terms = {  # type: ignore[assignment]
        "loss_ce": torch.tensor(1.0),
        "loss_valence": torch.tensor(0.5),
        "loss_arousal": torch.tensor(0.25),
    }
    trainer = SimpleNamespace(global_step=0, current_epoch=0, precision_plugin=object())
    with CountReads():
        NonFiniteGuard().on_before_optimizer_step(trainer, net, None)  # type: ignore[arg-type]
    assert CountReads.reads == 1


def test_user_plugins_keep_the_atomic_checkpoint_writer() -> None:
    from omegaconf import OmegaConf

    from fersuite.runs.builders import build_plugins

    amp = {
        "_target_": "lightning.pytorch.plugins.precision.MixedPrecision",
        "precision": "bf16-mixed",
        "device": "cpu",
    }
    plugins = build_plugins(OmegaConf.create({"trainer": {"plugins": [amp]}}))
    assert [type(p).__name__ for p in plugins] == ["MixedPrecision", "AtomicCheckpointIO"]
    assert [type(p).__name__ for p in build_plugins(OmegaConf.create({"trainer": {}}))] == [
        "AtomicCheckpointIO"
    ]
    # a CheckpointIO of the user's own replaces it
    own = {"_target_": "lightning.fabric.plugins.io.torch_io.TorchCheckpointIO"}
    plugins = build_plugins(OmegaConf.create({"trainer": {"plugins": [amp, own]}}))
    assert [type(p).__name__ for p in plugins] == ["MixedPrecision", "TorchCheckpointIO"]
