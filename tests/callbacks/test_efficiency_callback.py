"""The EfficiencyCallback reports published MACs and logs every figure once."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from fersuite.callbacks.efficiency import EfficiencyCallback
from fersuite.models.timm_backbone import TimmAffectNet


class _Recorder:
    def __init__(self) -> None:
        self.logged: dict[str, float] = {}

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.logged.update(metrics)


def test_macs_of_mobilenetv2_match_published_figure() -> None:
    net = TimmAffectNet("mobilenetv2_100", num_classes=1000, in_chans=3, input_size=224)
    module = SimpleNamespace(net=net, device=torch.device("cpu"))
    rec = _Recorder()
    trainer = SimpleNamespace(loggers=[rec], global_step=0, world_size=1)
    cb = EfficiencyCallback(latency_runs=3, latency_warmup=1, throughput_batch=2, throughput_runs=1)
    cb.on_fit_start(trainer, module)  # type: ignore[arg-type]
    macs = rec.logged["efficiency/macs"]
    # Published 0.30-0.31 GMac for the ImageNet classifier; our joint head adds 2 outputs.
    assert 0.30e9 <= macs <= 0.32e9
    assert rec.logged["efficiency/params"] == pytest.approx(3.50e6 + 1280 * 2 + 2, rel=0.01)
    cb.on_fit_end(trainer, module)  # type: ignore[arg-type]
    assert rec.logged["efficiency/latency_ms_b1"] > 0
    assert rec.logged["efficiency/latency_ms_b1_p90"] >= rec.logged["efficiency/latency_ms_b1"]
    assert rec.logged["efficiency/throughput_ips"] > 0
    assert net.training  # profiling restored the mode it found


def test_train_ips_excludes_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning validates (and checkpoints) before ``on_train_epoch_end``: not training time."""
    import fersuite.callbacks.efficiency as eff

    now = [0.0]
    monkeypatch.setattr(eff.time, "perf_counter", lambda: now[0])
    rec = _Recorder()
    trainer = SimpleNamespace(loggers=[rec], global_step=0, world_size=1)
    cb = EfficiencyCallback(warmup_batches=1)
    batch = {"image": torch.zeros(8, 1, 4, 4)}
    for epoch in range(2):
        cb.on_train_epoch_start(trainer, None)  # type: ignore[arg-type]
        for i in range(3):  # 1 s per training step
            cb.on_train_batch_start(trainer, None, batch, i)  # type: ignore[arg-type]
            now[0] += 1.0
            cb.on_train_batch_end(trainer, None, None, batch, i)  # type: ignore[arg-type]
        cb.on_validation_start(trainer, None)  # type: ignore[arg-type]
        now[0] += 100.0  # a slow validation + checkpoint
        cb.on_validation_end(trainer, None)  # type: ignore[arg-type]
        cb.on_train_epoch_end(trainer, None)  # type: ignore[arg-type]
        del epoch
    # 5 timed steps (the first of the run is warm-up) of 8 images in 5 s
    assert rec.logged["efficiency/train_ips"] == pytest.approx(8.0)
