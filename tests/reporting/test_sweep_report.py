"""fersuite-report on fake multirun dirs: table, Pareto plot, failed jobs, profile merge."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import OmegaConf

from fersuite.cli.report import main
from fersuite.reporting.hydra_callback import SweepReportCallback
from fersuite.reporting.sweep import write_sweep_report
from tests.conftest import run_env
from tests.reporting.helpers import assert_valid_png


def _job(
    sweep: Path,
    num: int,
    overrides: list[str],
    model: dict[str, Any],
    metrics: dict[str, float] | None,
    task_name: str = "train",
    profile: list[dict[str, Any]] | None = None,
    log: str = "",
) -> Path:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / ".hydra" / "config.yaml").write_text(
        yaml.safe_dump({"task_name": task_name, "model": model})
    )
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))
    if profile is not None:
        (job / "profile.json").write_text(json.dumps(profile))
    if log:
        (job / f"{task_name}.log").write_text(log)
    return job


def _metrics(acc: float, macs: float) -> dict[str, float]:
    return {
        "test/acc": acc,
        "test/f1_macro": acc - 0.05,
        "test/valence_ccc": 0.4,
        "test/arousal_ccc": 0.3,
        "efficiency/params": 2.2e6,
        "efficiency/macs": macs,
        "efficiency/latency_ms_b1": 3.5,
        "efficiency/throughput_ips": 900.0,
    }


@pytest.fixture
def train_sweep(tmp_path: Path) -> Path:
    sweep = tmp_path / "multiruns" / "2025-01-01_00-00-00"
    timm = {"arch": "timm", "name": "mobilenetv2_100"}
    _job(sweep, 0, ["model.name=mobilenetv2_100"], timm, _metrics(0.70, 3.1e8))
    _job(sweep, 1, ["model=mit_fer"], {"arch": "mit_fer", "variant": "b0"}, _metrics(0.60, 2.5e7))
    profiled = {"name": "resnet18", "params": 11.2e6, "macs": 1.82e9, "latency_ms_b1_median": 9.0}
    _job(
        sweep,
        2,
        ["model.name=resnet18"],
        {"arch": "timm", "name": "resnet18"},
        _metrics(0.65, 1.9e9),
        profile=[profiled],
    )
    _job(
        sweep,
        10,
        ["model.name=not_a_model"],
        {"arch": "timm", "name": "not_a_model"},
        None,
        log="[INFO] start\n[ERROR] ValueError: model.name='not_a_model' is not a timm model\n",
    )
    return sweep


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_report_lists_every_job_and_the_failed_one(train_sweep: Path) -> None:
    assert main([str(train_sweep)]) == 0
    rows = _csv(train_sweep / "report.csv")
    assert [r["job"] for r in rows] == ["0", "1", "2", "10"]  # numeric order, failed kept
    status = {r["job"]: r["status"] for r in rows}
    assert status == {"0": "ok", "1": "ok", "2": "ok", "10": "failed"}
    failed = rows[3]
    assert "no metrics.json" in failed["reason"] and "not a timm model" in failed["reason"]
    assert failed["overrides"] == "model.name=not_a_model"
    by_job = {r["job"]: r for r in rows}
    assert by_job["0"]["model"] == "mobilenetv2_100"
    assert by_job["1"]["model"] == "mit_fer-b0"
    assert float(by_job["0"]["acc"]) == pytest.approx(0.70)
    assert float(by_job["1"]["macs"]) == pytest.approx(2.5e7)
    # profile.json (a controlled measurement) wins over the training-time figures
    assert float(by_job["2"]["macs"]) == pytest.approx(1.82e9)
    assert float(by_job["2"]["latency_ms_b1"]) == pytest.approx(9.0)

    md = (train_sweep / "report.md").read_text()
    assert "3 of 4 jobs finished, 1 failed." in md
    assert "## Failed jobs" in md and "job `10`" in md
    assert "| mobilenetv2_100 |" in md and "310.00 MMac" in md
    assert "![Pareto plot](pareto.png)" in md
    assert_valid_png(train_sweep / "pareto.png")
    assert not (train_sweep / "profile.csv").exists() or _csv(train_sweep / "profile.csv")


def test_report_api_and_pareto_metric(train_sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere"
    report = write_sweep_report(train_sweep, out_dir=out, metric="test/f1_macro")
    assert [j.job for j in report.failed] == ["10"]
    assert set(report.paths) >= {"csv", "md", "pareto"}
    assert report.paths["pareto"] == out / "pareto.png"
    assert "test/f1_macro vs. MACs" in (out / "report.md").read_text()
    assert not (train_sweep / "report.md").exists()


def test_report_with_a_metric_nobody_logged_explains_the_missing_plot(train_sweep: Path) -> None:
    report = write_sweep_report(train_sweep, metric="test/nope")
    assert "pareto" not in report.paths
    assert "No Pareto plot" in (train_sweep / "report.md").read_text()


def test_corrupt_metrics_file_marks_the_job_failed(train_sweep: Path) -> None:
    (train_sweep / "1" / "metrics.json").write_text("{not json")
    report = write_sweep_report(train_sweep)
    (bad,) = [j for j in report.jobs if j.job == "1"]
    assert bad.status == "failed" and "metrics.json unreadable" in bad.reason


def test_profile_sweep_is_merged_into_one_record_per_model(tmp_path: Path) -> None:
    sweep = tmp_path / "profile_sweep"
    for i, name in enumerate(["lightweight_cnn", "mit_fer-b0"]):
        record = {
            "name": name,
            "input_shape": [1, 48, 48],
            "params": 1e6 * (i + 1),
            "macs": 3e7 * (i + 1),
            "latency_ms_b1_median": 1.0 + i,
            "throughput_ips": 500.0,
            "skipped_ops": {"aten::add": 3},
            "threads": 1,
            "device": "cpu",
        }
        _job(sweep, i, [f"model={name}"], {"arch": name}, None, "profile", [record])
    _job(sweep, 2, ["model=emonet"], {"arch": "emonet"}, None, "profile")  # crashed
    report = write_sweep_report(sweep)
    assert [j.status for j in report.jobs] == ["ok", "ok", "failed"]
    assert "no profile.json" in report.jobs[2].reason
    merged = json.loads((sweep / "profile.json").read_text())
    assert [r["name"] for r in merged] == ["lightweight_cnn", "mit_fer-b0"]
    assert [r["job"] for r in merged] == ["0", "1"]
    rows = _csv(sweep / "profile.csv")
    assert rows[1]["skipped_ops"] == "aten::add:3" and rows[1]["input_shape"] == "1 48 48"
    md = (sweep / "report.md").read_text()
    assert "accuracy" not in md  # a profile sweep has no quality columns
    assert "pareto" not in report.paths


def test_several_sweeps_are_combined(train_sweep: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    _job(other, 0, ["model=lightweight_cnn"], {"arch": "lightweight_cnn"}, _metrics(0.5, 4e7))
    out = tmp_path / "combined"
    assert main([str(train_sweep), str(other), "--out", str(out)]) == 0
    jobs = [r["job"] for r in _csv(out / "report.csv")]
    assert jobs == [
        "2025-01-01_00-00-00/0",
        "2025-01-01_00-00-00/1",
        "2025-01-01_00-00-00/2",
        "2025-01-01_00-00-00/10",
        "other/0",
    ]


def test_strict_mode_and_bad_dirs(
    train_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(train_sweep), "--strict"]) == 1
    assert main([str(tmp_path / "missing")]) == 2
    assert "sweep dir not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert "no job directories" in capsys.readouterr().err


def test_key_value_form_combines_sweeps_like_the_option_form(
    train_sweep: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    _job(other, 0, ["model=lightweight_cnn"], {"arch": "lightweight_cnn"}, _metrics(0.5, 4e7))
    legacy, keyed = tmp_path / "legacy", tmp_path / "keyed"
    old_form = [str(train_sweep), str(other), "--out", str(legacy), "--metric", "test/f1_macro"]
    assert main(old_form) == 0
    args = [f"sweeps=[{train_sweep},{other}]", f"out={keyed}", "metric=test/f1_macro"]
    assert main(args) == 0
    assert (keyed / "report.csv").read_text() == (legacy / "report.csv").read_text()
    assert "test/f1_macro vs. MACs" in (keyed / "report.md").read_text()
    assert (keyed / "pareto.png").is_file()
    # One dir without brackets; the report goes into it.
    assert main([f"sweeps={other}"]) == 0
    assert [r["job"] for r in _csv(other / "report.csv")] == ["0"]


def test_key_value_strict_and_bad_input(
    train_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([f"sweeps={train_sweep}", "strict=true"]) == 1
    assert main([f"sweeps={train_sweep}", "strict=false"]) == 0
    capsys.readouterr()
    bad = [
        ([f"sweeps={tmp_path / 'missing'}"], "sweep dir not found"),
        ([f"sweeps={train_sweep}", "strict=maybe"], "strict='maybe'; expected true or false"),
        ([f"sweeps={train_sweep}", "metrc=test/acc"], "unknown keys ['metrc']"),
        (["out=x"], "sweeps=<multirun dir> (or sweeps=[DIR_A,DIR_B]) is required"),
        ([f"sweeps={train_sweep}", "metric=[a,b]"], "metric=['a', 'b']; expected"),
        ([f"sweeps={train_sweep}", "--strict", "out=x"], "use either key=value"),
        ([f"sweeps={train_sweep}", "strict"], "arguments must be key=value"),
    ]
    for args, expected in bad:
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("fersuite-report: error: "), err
        assert expected in err[0], (args, err)


def test_hydra_callback_reports_only_in_multirun(train_sweep: Path) -> None:
    from hydra.types import RunMode

    cb = SweepReportCallback(metric="test/acc")
    run_cfg = OmegaConf.create({"hydra": {"mode": RunMode.RUN, "sweep": {"dir": str(train_sweep)}}})
    cb.on_job_end(run_cfg, job_return=None)
    assert not (train_sweep / "report.md").exists()
    multi = OmegaConf.create(
        {"hydra": {"mode": RunMode.MULTIRUN, "sweep": {"dir": str(train_sweep)}}}
    )
    cb.on_job_end(multi, job_return=None)
    assert (train_sweep / "report.md").is_file()
    (train_sweep / "report.md").unlink()
    cb.on_multirun_end(multi)
    assert (train_sweep / "report.md").is_file()


def test_hydra_callback_records_why_a_job_failed(train_sweep: Path) -> None:
    from hydra.core.utils import JobReturn, JobStatus
    from hydra.types import RunMode

    failed = JobReturn()
    failed.status = JobStatus.FAILED
    failed.return_value = ValueError("data.root=/nope does not exist\ntraceback detail")
    job = train_sweep / "10"
    cfg = OmegaConf.create(
        {
            "hydra": {
                "mode": RunMode.MULTIRUN,
                "sweep": {"dir": str(train_sweep)},
                "runtime": {"output_dir": str(job)},
            }
        }
    )
    SweepReportCallback().on_job_end(cfg, job_return=failed)
    assert (job / "error.txt").read_text() == "ValueError: data.root=/nope does not exist\n"
    rows = {r["job"]: r for r in _csv(train_sweep / "report.csv")}
    assert rows["10"]["reason"] == (
        "no metrics.json (the job did not finish): ValueError: data.root=/nope does not exist"
    )


def test_hydra_callback_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "nothing")}}})
    SweepReportCallback().on_multirun_end(cfg)
    assert "retry with `fersuite-report" in caplog.text


@pytest.mark.smoke
@pytest.mark.subprocess
def test_console_script(train_sweep: Path, tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "fersuite-report"
    res = subprocess.run(
        [str(exe), str(train_sweep)],
        env=run_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "fersuite sweep report" in res.stdout and "failed" in res.stdout
    assert (train_sweep / "report.csv").is_file()


def _timed(acc: float, device: str, threads: float, latency: float) -> dict[str, Any]:
    return {
        **_metrics(acc, 3e8),
        "efficiency/latency_ms_b1": latency,
        "efficiency/latency_device": device,
        "efficiency/latency_threads": threads,
    }


def test_latency_device_and_threads_are_reported_and_never_mixed(tmp_path: Path) -> None:
    timm = {"arch": "timm", "name": "mobilenetv2_100"}
    same = tmp_path / "same"
    _job(same, 0, ["seed=1"], timm, _timed(0.7, "cpu", 1.0, 9.9))
    _job(same, 1, ["seed=2"], timm, _timed(0.6, "cpu", 1.0, 9.7))
    write_sweep_report(same)
    rows = _csv(same / "report.csv")
    assert [(r["latency_device"], r["latency_threads"]) for r in rows] == [("cpu", "1")] * 2
    md = (same / "report.md").read_text()
    assert "latency b1 (ms, cpu, 1 thread)" in md and "not comparable" not in md

    mixed = tmp_path / "mixed"
    _job(mixed, 0, ["trainer=cpu"], timm, _timed(0.7, "cpu", 1.0, 9.9))
    _job(mixed, 1, ["trainer=gpu"], timm, _timed(0.6, "cuda:0", 1.0, 1.2))
    # a profile.json figure carries its own device and threads
    profiled = {"name": "mobilenetv2_100", "latency_ms_b1_median": 13.5, "device": "cpu"}
    _job(
        mixed,
        2,
        ["trainer=ddp"],
        timm,
        _timed(0.6, "cuda:0", 1.0, 1.3),
        profile=[{**profiled, "threads": 4}],
    )
    write_sweep_report(mixed)
    rows = {r["job"]: r for r in _csv(mixed / "report.csv")}
    assert (rows["1"]["latency_device"], float(rows["1"]["latency_ms_b1"])) == ("cuda:0", 1.2)
    assert (rows["2"]["latency_device"], rows["2"]["latency_threads"]) == ("cpu", "4")
    assert float(rows["2"]["latency_ms_b1"]) == pytest.approx(13.5)
    md = (mixed / "report.md").read_text()
    # one latency column per (device, threads): a CPU and a GPU figure never share a column
    header = next(line for line in md.splitlines() if line.startswith("| job"))
    for col in ("cpu, 1 thread", "cuda:0, 1 thread", "cpu, 4 threads"):
        assert f"latency b1 (ms, {col})" in header
    assert "not comparable" in md
    table = [line for line in md.splitlines() if line.startswith("| 1 ")]
    cells = [c.strip() for c in table[0].strip("|").split("|")]
    names = [c.strip() for c in header.strip("|").split("|")]
    by_col = dict(zip(names, cells, strict=True))
    assert by_col["latency b1 (ms, cuda:0, 1 thread)"] == "1.20"
    assert by_col["latency b1 (ms, cpu, 1 thread)"] == "-"


def test_multirun_end_uploads_the_report_as_a_wandb_table(
    train_sweep: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from hydra.types import RunMode

    monkeypatch.setenv("WANDB_SILENT", "true")
    # no list of the installed packages sent with the run (~1 s; no assertion reads it)
    monkeypatch.setenv("WANDB_X_SAVE_REQUIREMENTS", "false")
    cfg = OmegaConf.create(
        {
            "hydra": {"mode": RunMode.MULTIRUN, "sweep": {"dir": str(train_sweep)}},
            # Only plain values are read: a target here is never instantiated.
            "logger": {"wandb": {"_target_": "os.remove", "project": "p", "mode": "offline"}},
        }
    )
    SweepReportCallback().on_multirun_end(cfg)
    tables = list(train_sweep.glob("wandb/offline-run-*/files/media/table/sweep/report_*.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    rows = _csv(train_sweep / "report.csv")
    assert table["columns"] == list(rows[0].keys())
    assert [r[table["columns"].index("job")] for r in table["data"]] == [r["job"] for r in rows]
    # Without logger.wandb (logger=csv) nothing is uploaded.
    cfg.logger = {"csv": {"save_dir": "x"}}
    SweepReportCallback().on_multirun_end(cfg)
    assert len(list(train_sweep.glob("wandb/offline-run-*"))) == 1
