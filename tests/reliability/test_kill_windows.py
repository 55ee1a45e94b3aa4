"""The pieces that close the kill windows at the end of a run (the runs themselves:
``test_kill_resume.py``): no periodic last.ckpt that Lightning would resume past a validation,
and the fit's figures kept in every checkpoint, read back as data."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from fersuite.callbacks.checkpointing import RunCheckpoint
from fersuite.callbacks.periodic_checkpoint import PeriodicLastCheckpoint
from fersuite.errors import UntrustedFileError
from fersuite.runs.resume import FIT_METRICS_KEY, FitMetrics, parse_fit_metrics


def _trainer(last_batch: bool, validates: bool | None) -> Any:
    epoch_loop = SimpleNamespace(batch_progress=SimpleNamespace(is_last_batch=last_batch))
    if validates is not None:
        epoch_loop._should_check_val_fx = lambda fetcher: validates  # type: ignore[attr-defined]
    return SimpleNamespace(fit_loop=SimpleNamespace(epoch_loop=epoch_loop, _data_fetcher=object()))


@pytest.mark.parametrize(
    ("last_batch", "validates", "writes"),
    [
        (False, False, True),  # mid-epoch, training goes on: written
        (False, None, True),  # a Lightning without the rule: mid-epoch is written
        (True, False, False),  # the epoch's last batch: its epoch end is never replayed
        (False, True, False),  # validation follows (val_check_interval < 1)
    ],
)
def test_periodic_last_ckpt_is_not_written_before_validation_or_epoch_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, last_batch: bool, validates: bool, writes: bool
) -> None:
    saved: list[int] = []
    monkeypatch.setattr(
        RunCheckpoint, "on_train_batch_end", lambda self, *args: saved.append(args[-1])
    )
    cb = PeriodicLastCheckpoint(dirpath=str(tmp_path), every_n_train_steps=1)
    cb.on_train_batch_end(_trainer(last_batch, validates), None, None, None, 7)  # type: ignore[arg-type]
    assert saved == ([7] if writes else [])


def test_fit_metrics_kept_in_checkpoint_and_read_back_bit_for_bit() -> None:
    value = torch.tensor(2.3693468570709229)  # float32: its float is exact
    trainer = SimpleNamespace(callback_metrics={"val/loss": value, "val/acc": torch.tensor(0.125)})
    saving = FitMetrics()
    saving.restored = {"lr-AdamW/pg1": 0.00101, "val/acc": 0.5}  # resumed with; not logged since
    checkpoint: dict[str, Any] = {}
    saving.on_save_checkpoint(trainer, None, checkpoint)  # type: ignore[arg-type]
    kept = checkpoint[FIT_METRICS_KEY]
    assert kept == {"lr-AdamW/pg1": 0.00101, "val/acc": 0.125, "val/loss": value.item()}
    assert all(type(v) is float for v in kept.values())

    loading = FitMetrics()
    fit = SimpleNamespace(state=SimpleNamespace(fn="fit"), ckpt_path="/run/last.ckpt")
    loading.on_load_checkpoint(fit, None, checkpoint)  # type: ignore[arg-type]
    assert loading.restored == kept
    # the best checkpoint that test loads does not replace them
    test = SimpleNamespace(state=SimpleNamespace(fn="test"), ckpt_path="/run/best.ckpt")
    loading.on_load_checkpoint(test, None, {FIT_METRICS_KEY: {"val/loss": 9.0}})  # type: ignore[arg-type]
    assert loading.restored == kept
    # a checkpoint written before the figures were kept: none
    loading.on_load_checkpoint(fit, None, {})  # type: ignore[arg-type]
    assert loading.restored == {}


CRAFTED: dict[str, tuple[Any, str]] = {
    "not_a_dict": (["val/loss"], "is a list; expected a dict of metric name: number"),
    "nan": ({"val/loss": math.nan}, "['val/loss'] is 'nan'; expected a finite number"),
    "inf": ({"val/loss": math.inf}, "['val/loss'] is 'inf'; expected a finite number"),
    "text": ({"val/loss": "${oc.env:HOME}"}, "expected a finite number"),
    "tensor": ({"val/loss": torch.zeros(3)}, "expected a finite number"),
    "bool": ({"val/loss": True}, "expected a finite number"),
    "key": ({7: 1.0}, "key '7'; expected a metric name"),
    "control": ({"val/\nloss": 1.0}, "expected a metric name"),
    "long_key": ({"k" * 300: 1.0}, "expected a metric name"),
    "too_many": ({f"m{i}": 0.0 for i in range(10_001)}, "10001 entries; expected at most"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_fit_metrics_are_refused_in_one_line(case: str) -> None:
    raw, part = CRAFTED[case]
    with pytest.raises(UntrustedFileError) as info:
        parse_fit_metrics(raw, "/run/checkpoints/last.ckpt")
    message = str(info.value)
    assert message.startswith(f"/run/checkpoints/last.ckpt: {FIT_METRICS_KEY}"), message
    assert part in message and "\n" not in message and len(message) < 300, message
