"""The checkpoint and ``<monitor>_best`` follow the monitored metric's direction (defect 5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from fersuite.config import validate_config
from fersuite.errors import ConfigError
from fersuite.monitoring import monitor_direction, optuna_direction
from tests.conftest import TINY

#: Three epochs (three distinct values: the best of one direction is never the other's) of the
#: smallest run: 1 training step an epoch, one validation batch, the narrowest CNN.
RUN = [
    *TINY,
    "trainer.max_epochs=3",
    "data.train_size=16",
    "data.val_size=16",
    "data.test_size=16",
    "data.batch_size=16",
    "logger=csv",
    "model=lightweight_cnn",
    "model.width_mult=0.25",
    "model.expansion_channels=32",
    "callbacks.efficiency=null",
    "callbacks.reports=null",
    "test=false",
    "scheduler=none",
    "optimizer.lr=0.01",
]


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        ("val/loss", "min"),
        ("val/valence_rmse", "min"),
        ("val/loss_ce", "min"),
        ("val/acc", "max"),
        ("val/f1_macro", "max"),
        ("val/arousal_ccc", "max"),
        ("val/valence_pcc", "max"),
        ("val/valence_sagr", "max"),
    ],
)
def test_direction_follows_the_name(name: str, mode: str) -> None:
    assert monitor_direction(name) == mode
    assert monitor_direction(name, "max" if mode == "min" else "min") != mode


def test_unknown_metric_asks_for_monitor_mode(cfg_factory) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="set monitor_mode=min or monitor_mode=max"):
        validate_config(cfg_factory(["monitor=val/something"]))
    with pytest.raises(ConfigError, match=r"monitor_mode='down'; expected"):
        validate_config(cfg_factory(["monitor_mode=down"]))
    cfg = cfg_factory(["monitor=val/something", "monitor_mode=min"])
    validate_config(cfg)
    assert cfg.callbacks.model_checkpoint.mode == "min"
    assert optuna_direction("val/loss_best", "val/loss") == "minimize"
    assert optuna_direction("val/acc_best", "val/acc") == "maximize"


def _epochs(run: Path) -> list[dict[str, str]]:
    import csv

    (path,) = run.rglob("metrics.csv")
    with open(path) as fh:
        return [r for r in csv.DictReader(fh) if r.get("val/loss")]


@pytest.mark.smoke
@pytest.mark.parametrize(
    ("monitor", "extra", "lower"),
    [
        ("val/loss", [], True),
        ("val/valence_rmse", [], True),
        ("val/loss", ["monitor_mode=max"], False),  # the override wins
    ],
)
def test_best_checkpoint_and_best_value_follow_the_direction(
    cfg_factory, tmp_path: Path, monitor: str, extra: list[str], lower: bool
) -> None:  # type: ignore[no-untyped-def]
    from fersuite.training.run import train

    cfg = cfg_factory([*RUN, f"monitor={monitor}", f"optimized_metric={monitor}_best", *extra])
    with open_dict(cfg):
        del cfg["hydra"]  # a job's config
    metrics = train(cfg)
    rows = _epochs(tmp_path / "run")
    values = [float(r[monitor]) for r in rows]
    assert len(values) == 3 and len(set(values)) == 3
    best = min(values) if lower else max(values)
    assert metrics[f"{monitor}_best"] == pytest.approx(best, rel=1e-5)
    (ckpt,) = (tmp_path / "run" / "checkpoints").glob("best-*.ckpt")
    assert ckpt.name == f"best-epoch{values.index(best):03d}.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    (cb,) = [v for k, v in state["callbacks"].items() if k.startswith("ModelCheckpoint")]
    assert cb["best_model_score"].item() == pytest.approx(best, rel=1e-5)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())[f"{monitor}_best"]
