"""One latency definition: the training callback and fersuite-profile measure the same way
(same device, thread count and run counts by default) and record device and threads next to
every latency."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from rich.console import Console

from fersuite.callbacks.efficiency import EfficiencyCallback
from fersuite.config import CONFIG_DIR
from fersuite.models.registry import create_model
from fersuite.profiling.timing import LATENCY_PROTOCOL
from fersuite.reporting.profiles import ProfileSettings, profile_model
from fersuite.utils.run_info import print_summary, write_metrics


def _compose(name: str) -> object:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose(config_name=name)
    finally:
        GlobalHydra.instance().clear()


def test_training_and_profile_share_one_latency_definition() -> None:
    cb = instantiate(_compose("train").callbacks.efficiency)  # type: ignore[attr-defined]
    s = ProfileSettings.from_config(_compose("profile").profile)  # type: ignore[attr-defined]
    p = LATENCY_PROTOCOL
    assert p.device == "cpu" and p.threads == 1  # the documented default
    assert cb.device == s.devices()[0] == p.device
    assert cb.threads == s.threads == p.threads
    assert (cb.latency_warmup, cb.latency_runs) == (s.latency_warmup, s.latency_runs)
    assert (cb.latency_warmup, cb.latency_runs) == (p.warmup, p.runs)
    assert (cb.throughput_batch, cb.throughput_warmup, cb.throughput_runs) == (
        s.batch_size,
        s.throughput_warmup,
        s.throughput_runs,
    )
    # the Python defaults are the config defaults
    bare = EfficiencyCallback()
    assert (bare.device, bare.threads) == (cb.device, cb.threads)
    assert (ProfileSettings().threads, ProfileSettings().devices()[0]) == (p.threads, p.device)


def test_both_paths_record_latency_device_and_threads(tmp_path: Path) -> None:
    net = create_model("timm", name="test_resnet", num_classes=8, in_chans=1, input_size=32)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)  # the process default must not leak into the figure
    try:
        cb = EfficiencyCallback(
            latency_runs=2, latency_warmup=0, throughput_batch=2, throughput_runs=1
        )
        trainer = SimpleNamespace(loggers=[], global_step=0, world_size=1)
        cb.on_fit_end(trainer, SimpleNamespace(net=net, device=torch.device("cpu")))  # type: ignore[arg-type]
        settings = ProfileSettings(
            latency_runs=2, latency_warmup=0, batch_size=2, throughput_runs=1
        )
        record = profile_model(net, "test_resnet", settings)
        assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(previous)
    assert cb.results["efficiency/latency_device"] == record["device"] == "cpu"
    assert cb.results["efficiency/latency_threads"] == record["threads"] == 1

    # metrics.json keeps both beside the latency; the summary table prints them
    metrics = write_metrics(tmp_path / "metrics.json", dict(cb.results))
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["efficiency/latency_device"] == "cpu"
    assert saved["efficiency/latency_threads"] == 1.0
    assert saved["efficiency/latency_ms_b1"] > 0
    console = Console(record=True, width=120)
    print_summary(metrics, {}, console=console)
    text = console.export_text()
    assert "efficiency/latency_device" in text and "efficiency/latency_threads" in text
