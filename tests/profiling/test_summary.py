"""The model summary: modules to a depth, their params and MACs, printed once at fit start."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from fersuite.callbacks.efficiency import EfficiencyCallback
from fersuite.errors import ConfigError
from fersuite.models.registry import create_model
from fersuite.profiling import count_macs, count_params
from fersuite.profiling.summary import format_summary, summary_rows


def _cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("lightweight_cnn", num_classes=8, in_chans=1, input_size=48)


def test_rows_match_each_module_counted_on_its_own() -> None:
    net = _cnn()
    macs = count_macs(net, input_shape=(1, 1, 48, 48))
    rows = {r.name: r for r in summary_rows(net, macs, depth=2)}
    assert "blocks.11" in rows and "blocks.0.conv" not in rows  # depth 2, not 3
    top = [r for r in rows.values() if r.depth == 1]
    assert sum(r.params for r in top) == count_params(net).total
    assert sum(r.macs for r in top) == pytest.approx(macs.total, rel=1e-6)
    # The stem counted alone, on the same input, gives the same MACs as its row.
    assert rows["stem"].macs == count_macs(net.stem, input_shape=(1, 1, 48, 48)).total
    assert rows["blocks.0"].params == sum(p.numel() for p in net.blocks[0].parameters())
    text = format_summary(list(rows.values()), count_params(net).total, macs, (1, 1, 48, 48))
    assert "blocks.11" in text and "InvertedResidual" in text and "1x1x48x48" in text


def test_printed_once_at_fit_start(caplog: pytest.LogCaptureFixture) -> None:
    net = _cnn()
    module = SimpleNamespace(net=net, device=torch.device("cpu"))
    trainer = SimpleNamespace(loggers=[], global_step=0, world_size=1)
    cb = EfficiencyCallback(summary_depth=1)
    with caplog.at_level(logging.INFO, logger="fersuite.callbacks.efficiency"):
        cb.on_fit_start(trainer, module)  # type: ignore[arg-type]
    summaries = [r for r in caplog.records if "model summary" in r.getMessage()]
    assert len(summaries) == 1
    assert "expansion" in cb.summary and "blocks.0" not in cb.summary  # depth 1
    off = EfficiencyCallback(summary_depth=0)
    off.on_fit_start(trainer, module)  # type: ignore[arg-type]
    assert off.summary == ""
    with pytest.raises(ConfigError, match="summary_depth"):
        EfficiencyCallback(summary_depth=-1)
