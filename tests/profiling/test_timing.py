"""Latency / throughput measurement: sane numbers, no side effects on model or torch state."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from fersuite.profiling import LatencyStats, ThroughputStats, measure_latency, measure_throughput
from fersuite.types import AffectOutput


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1)
        )
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(8, 9)

    def forward(self, x: Tensor) -> AffectOutput:
        out = self.head(self.drop(self.body(x).flatten(1)))
        return AffectOutput(out[:, :7], out[:, 7].tanh(), out[:, 8].tanh())


def _snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_unchanged(model: nn.Module, before: dict[str, Tensor], flags: list[bool]) -> None:
    assert [m.training for m in model.modules()] == flags
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert all(not p.is_inference() for p in model.parameters())


def test_latency() -> None:
    model = Small().train()
    flags, before = [m.training for m in model.modules()], _snapshot(model)
    threads_before = torch.get_num_threads()

    stats = measure_latency(model, (1, 3, 32, 32), warmup=2, runs=15, threads=1)

    assert isinstance(stats, LatencyStats)
    for value in (stats.median_ms, stats.p90_ms, stats.mean_ms):
        assert math.isfinite(value)
        assert value > 0
    assert stats.p90_ms >= stats.median_ms
    assert stats.runs == 15
    assert stats.threads == 1
    assert stats.device == "cpu"
    assert torch.get_num_threads() == threads_before
    _assert_unchanged(model, before, flags)


def test_latency_default_threads_and_explicit_device() -> None:
    model = Small()
    stats = measure_latency(model, (2, 3, 16, 16), device="cpu", warmup=0, runs=3)
    assert stats.threads == torch.get_num_threads()
    assert stats.p90_ms >= stats.median_ms > 0


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 3, 32, 32)])
def test_throughput(shape: tuple[int, ...]) -> None:
    model = Small().train()
    flags, before = [m.training for m in model.modules()], _snapshot(model)

    stats = measure_throughput(model, shape, batch_size=8, warmup=1, runs=3)

    assert isinstance(stats, ThroughputStats)
    assert math.isfinite(stats.images_per_s)
    assert stats.images_per_s > 0
    assert stats.batch_size == 8
    assert math.isfinite(stats.peak_memory_mb)
    assert stats.peak_memory_mb >= 0
    assert stats.memory_source in {"cpu_rss_increase", "cpu_maxrss_increase"}
    assert stats.device == "cpu"
    _assert_unchanged(model, before, flags)


def test_invalid_arguments() -> None:
    model = Small()
    with pytest.raises(ValueError, match="runs"):
        measure_latency(model, (1, 3, 8, 8), runs=0)
    with pytest.raises(ValueError, match="threads"):
        measure_latency(model, (1, 3, 8, 8), threads=0)
    with pytest.raises(ValueError, match="batch_size"):
        measure_throughput(model, (3, 8, 8), batch_size=0)
