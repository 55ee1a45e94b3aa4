"""``make gpu-check`` (experiments/gpu_check/run.py) without a GPU: the no-CUDA exit, the job
list composing as real configs, and the table built from fake job outcomes."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from fersuite.config import CONFIG_DIR, validate_config
from tests.conftest import REPO, run_env

GPU_CHECK = REPO / "experiments" / "gpu_check"


@pytest.fixture(scope="module")
def gc() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check_run", GPU_CHECK / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module
    spec.loader.exec_module(module)
    return module


@pytest.mark.subprocess
def test_without_cuda_it_says_so_and_exits_0(tmp_path: Path) -> None:
    env = {**run_env(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    res = subprocess.run(
        [sys.executable, str(GPU_CHECK / "run.py"), "--out", str(tmp_path / "out")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "found no CUDA device" in res.stdout
    assert not (tmp_path / "out").exists()  # nothing run, nothing written


def test_every_job_is_a_valid_config(gc: ModuleType, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.syspath_prepend(str(GPU_CHECK))  # the probe callback's module
    jobs = gc.build_jobs(tmp_path, steps=300)
    names = [j.name for j in jobs]
    assert names == [
        "mit_fer-bf16",
        "mit_fer-fp16",
        "mobilenetv2-bf16",
        "mobilenetv2-fp16",
        "distill-live",
        "distill-cached",
        "compile",
        "ddp",
        "profile-cuda",
    ]
    for job in jobs:
        app = "profile" if job.script == "fersuite-profile" else "train"
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(config_name=app, overrides=job.overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        assert cfg.hydra.run.dir == str(job.run_dir)
        with open_dict(cfg):
            cfg.paths.output_dir = str(job.run_dir)
            del cfg["hydra"]
        validate_config(cfg)
        assert cfg.model.in_chans == 3 and cfg.model.input_size == 224, job.name
        if app == "profile":
            assert cfg.profile.device == "cuda"
            continue
        assert cfg.trainer.accelerator == "gpu", job.name
        steps = cfg.trainer.max_epochs * cfg.data.train_size // cfg.data.batch_size
        assert 200 <= steps <= 400, (job.name, steps)
        assert cfg.callbacks.gpu_probe.path == str(job.result_file)
        expected = "16-mixed" if job.name.endswith("fp16") else "bf16-mixed"
        assert cfg.trainer.precision == expected, job.name
    by_name = {j.name: j for j in jobs}
    assert "distill.teacher_outputs=cached" in by_name["distill-cached"].overrides
    assert "distill.teacher_outputs=live" in by_name["distill-live"].overrides
    assert "compile=true" in by_name["compile"].overrides
    assert "trainer=ddp" in by_name["ddp"].overrides
    GlobalHydra.instance().clear()


def test_table_rows_from_fake_jobs(gc: ModuleType, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    def fake(job):  # type: ignore[no-untyped-def]
        job.run_dir.mkdir(parents=True, exist_ok=True)
        if job.name == "mit_fer-fp16":
            return gc.Outcome(1, 3.0, log_tail="...\nValueError: bad thing\nsome footer\n")
        if job.name == "compile":
            return gc.Outcome(None, 9.0, timed_out=True)
        if job.name == "mobilenetv2-fp16":
            probe = {"steps_per_s": 1.0, "images_per_s": 64.0, "loss_finite": False}
            job.result_file.write_text(json.dumps({**probe, "timed_steps": 5}))
            return gc.Outcome(0, 4.0)
        if job.name == "ddp":
            return gc.Outcome(0, 2.0)  # exit 0 but nothing written
        if job.script == "fersuite-profile":
            record = {"throughput_ips": 5000.0, "peak_memory_mb": 300.0, "device": "cuda:0"}
            job.result_file.write_text(json.dumps([record]))
            return gc.Outcome(0, 5.0)
        probe = {
            "steps_per_s": 20.0,
            "images_per_s": 1280.0,
            "loss_finite": True,
            "peak_memory_mb": 2048.0,
            "timed_steps": 280,
        }
        job.result_file.write_text(json.dumps(probe))
        return gc.Outcome(0, 30.0)

    out = tmp_path / "out"
    code = gc.main(["--out", str(out)], cuda_available=lambda: True, runner=fake)
    assert code == 1  # some jobs failed: the script still finished with a whole table
    text = capsys.readouterr().out
    table = [ln for ln in text.splitlines() if ln.startswith("| ")]
    assert [c.strip() for c in table[0].strip("|").split("|")] == list(gc.COLUMNS)
    rows = {ln.strip("|").split("|")[0].strip(): ln for ln in table[1:]}
    assert len(rows) == 9
    ok = [c.strip() for c in rows["mit_fer-bf16"].strip("|").split("|")]
    assert ok == ["mit_fer-bf16", "20.0", "1,280", "yes", "2,048 MiB", "30", "ok"]
    assert "FAILED (exit 1: ValueError: bad thing)" in rows["mit_fer-fp16"]
    assert "FAILED (timeout after 240 s)" in rows["compile"]
    assert "FAILED (a training loss was not finite)" in rows["mobilenetv2-fp16"]
    assert "| NO " in rows["mobilenetv2-fp16"]
    assert "FAILED (no readable probe.json" in rows["ddp"]
    profile = [c.strip() for c in rows["profile-cuda"].strip("|").split("|")]
    assert profile[1:5] == ["-", "5,000", "-", "300 MiB"] and profile[-1] == "ok"
    assert "5 of 9 jobs ok" in text
    summary = json.loads((out / "summary.json").read_text())
    assert [s["ok"] for s in summary].count(True) == 5
    assert (out / "table.md").read_text().startswith("| job")


def test_jobs_beyond_the_time_budget_are_skipped(gc: ModuleType, tmp_path: Path) -> None:
    jobs = gc.build_jobs(tmp_path, steps=300)[:3]
    now = iter([0.0, 0.0, 100.0, 400.0])  # start, then before each job
    ran: list[str] = []

    def runner(job):  # type: ignore[no-untyped-def]
        ran.append(job.name)
        raise RuntimeError("runner broke")  # a crash of the runner is a FAILED row too

    rows = gc.run_jobs(jobs, runner, budget_s=300.0, clock=lambda: next(now))
    assert ran == ["mit_fer-bf16", "mit_fer-fp16"]
    assert rows[0].status == "FAILED (exit 1: RuntimeError: runner broke)"
    assert rows[2].status.startswith("SKIPPED (time budget")


def test_probe_times_training_steps_and_checks_losses(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import torch

    monkeypatch.syspath_prepend(str(GPU_CHECK))
    from types import SimpleNamespace

    from gpu_probe import GpuProbe

    probe = GpuProbe(str(tmp_path / "probe.json"), skip_steps=2)
    trainer = SimpleNamespace(
        world_size=2,
        num_training_batches=5,
        is_global_zero=True,
        precision="bf16-mixed",
        precision_plugin=SimpleNamespace(scaler=None),
    )
    batch = {"image": torch.zeros(4, 3, 8, 8)}
    for epoch_losses in ([1.0, 2.0, 3.0, 4.0, 5.0], [1.0, float("inf"), 1.0, 1.0, 0.5]):
        for i, loss in enumerate(epoch_losses):
            probe.on_train_batch_start(trainer, None, batch, i)  # type: ignore[arg-type]
            out = {"loss": torch.tensor(loss)}
            probe.on_train_batch_end(trainer, None, out, batch, i)  # type: ignore[arg-type]
        assert probe._t0 is None  # stopped at the last step, before validation
        probe.on_train_epoch_end(trainer, None)  # type: ignore[arg-type]
    probe.on_fit_end(trainer, None)  # type: ignore[arg-type]
    record = json.loads((tmp_path / "probe.json").read_text())
    assert record["steps"] == 10 and record["timed_steps"] == 8  # the first 2 skipped
    assert record["images_per_s"] == pytest.approx(8 * 4 * 2 / record["seconds"])
    assert record["loss_finite"] is False and record["last_loss"] == 0.5


@pytest.mark.subprocess
def test_a_job_past_its_timeout_is_killed_with_its_children(gc: ModuleType, tmp_path: Path) -> None:
    code = (
        "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
        "'import time; time.sleep(60)']); print('started', flush=True); time.sleep(60)"
    )
    job = gc.Job("sleeper", "python", ["-c", code], 3.0, tmp_path / "sleeper")
    outcome = gc.run_subprocess(job, dict(run_env(tmp_path)))
    assert outcome.timed_out and outcome.returncode is None
    assert outcome.seconds < 30 and "started" in outcome.log_tail
    row = gc.build_row(job, outcome)
    assert row.status == "FAILED (timeout after 3 s)"
