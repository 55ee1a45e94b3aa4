"""A real fersuite-train multirun is reported by the Hydra callback, failed job included."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests._helpers.apps import run_app
from tests.conftest import TINY, run_env
from tests.reporting.helpers import assert_valid_png


@pytest.mark.smoke
def test_training_multirun_with_a_failing_job_is_reported(tmp_path: Path) -> None:
    res = run_app(
        "fersuite-train",
        [
            "--multirun",
            *TINY,
            "callbacks.reports.plots=true",
            "logger=csv",
            "model.name=mobilenetv2_100,not_a_model",
        ],
        cwd=tmp_path,
        env=run_env(tmp_path),
    )
    assert res.returncode == 1  # a failed job (fersuite.apps): the status says how many
    assert res.stderr.strip().splitlines()[-1].startswith("fersuite-train: error: 1 of 2 jobs")
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    # the run report of the job that finished
    job0 = sweep / "0"
    assert_valid_png(job0 / "confusion_test.png")
    assert_valid_png(job0 / "va_test.png")
    assert (job0 / "per_class_test.csv").is_file()

    # the sweep report, refreshed after each job, so present although the sweep aborted
    with open(sweep / "report.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["job"], r["status"]) for r in rows] == [("0", "ok"), ("1", "failed")]
    assert rows[0]["model"] == "mobilenetv2_100" and float(rows[0]["macs"]) > 1e6
    assert 0.0 <= float(rows[0]["acc"]) <= 1.0
    assert rows[1]["overrides"] == "model.name=not_a_model"  # the shared ones are in the md
    assert "is not a timm model" in rows[1]["reason"]  # the job's exception, recorded
    md = (sweep / "report.md").read_text()
    assert "1 of 2 jobs finished, 1 failed." in md and "job `1`" in md
    assert_valid_png(sweep / "pareto.png")
