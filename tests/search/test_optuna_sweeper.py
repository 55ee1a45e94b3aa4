"""Searches that survive their sweeper: the study is stored in the sweep dir, and the same
command resumes it (fersuite.search.optuna_sweeper)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from omegaconf import DictConfig
from optuna.trial import TrialState

import fersuite.cli.train as train_cli
from fersuite.errors import ConfigError
from fersuite.search.optuna_sweeper import (
    DIED_KEY,
    JOB_KEY,
    Tally,
    open_storage,
    sweeper_is_gone,
    tally,
)
from tests._helpers.apps import AppResult, call_app
from tests.conftest import TINY

#: The preset, on tiny synthetic runs (no test stage, no reports: a trial in seconds).
SEARCH = [
    "hparams_search=mit_fer_optuna",
    "hydra.sweeper.sampler.n_startup_trials=2",
    *TINY,
    "logger=csv",
    "callbacks.efficiency=null",
    "callbacks.reports=null",
    "test=false",
]


def _sweep(root: Path) -> Path:
    return root / "logs" / "train" / "multiruns" / "mit_fer"


def _study(sweep: Path) -> optuna.Study:
    return optuna.load_study(study_name="mit_fer", storage=open_storage(None, sweep))


def _trials(sweep: Path) -> list[tuple[int, str, float | None]]:
    return [(t.number, t.state.name, t.value) for t in _study(sweep).trials]


def _search(
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *overrides: str,
) -> AppResult:
    return call_app(
        train_cli.main, "fersuite-train", [*SEARCH, *overrides], root, monkeypatch, capsys
    )


class FakeTraining:
    """Stands in for ``fersuite.training.run.train``: writes ``metrics.json`` at once; the
    value is the learning rate drawn (so the best trial is known). ``fail`` names the calls
    (1-based) that raise, as a trial failing on its own does."""

    def __init__(self, fail: tuple[int, ...] = ()) -> None:
        self.calls: list[str] = []
        self.fail = fail

    def __call__(self, cfg: DictConfig) -> dict[str, float]:
        self.calls.append(str(cfg.paths.output_dir))
        if len(self.calls) in self.fail:
            raise ValueError("this trial fails on its own")
        metrics = {"val/acc_best": float(cfg.optimizer.lr)}
        (Path(cfg.paths.output_dir) / "metrics.json").write_text(json.dumps(metrics))
        return metrics


def _snapshot(job: Path) -> dict[str, tuple[int, bytes]]:
    """Every file of a job dir: (mtime, bytes), to tell that nothing was written again."""
    return {
        str(p.relative_to(job)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(job.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize(
    "real", [False, pytest.param(True, marks=pytest.mark.slow, id="tiny-training")]
)
def test_killed_search_resumes_to_its_budget(
    real: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # real: tiny MiT-FER runs (5 trainings, minutes on 2 cores); else FakeTraining
    real_train = train_cli.train if real else FakeTraining()
    calls: list[str] = []

    def killed_during_the_third_trial(cfg: DictConfig) -> Any:
        calls.append(str(cfg.paths.output_dir))
        if len(calls) == 3:  # the sweeper dies (Ctrl-C / SIGKILL) inside trial 2
            raise KeyboardInterrupt
        return real_train(cfg)

    monkeypatch.setattr(train_cli, "train", killed_during_the_third_trial)
    with pytest.raises(KeyboardInterrupt):
        _search(tmp_path, monkeypatch, capsys, "hydra.sweeper.n_trials=5")
    sweep = _sweep(tmp_path)
    first = _study(sweep).trials
    assert [(t.number, t.state) for t in first] == [
        (0, TrialState.COMPLETE),
        (1, TrialState.COMPLETE),
        (2, TrialState.RUNNING),  # what a dead sweeper leaves in the stored study
    ]
    jobs_before = {n: _snapshot(sweep / str(n)) for n in (0, 1)}
    assert all("metrics.json" in files for files in jobs_before.values())
    assert not (sweep / "2" / "metrics.json").exists()

    # The same command again: the study goes on where it stopped, to 5 finished trials.
    calls.clear()
    monkeypatch.setattr(train_cli, "train", lambda cfg: (calls.append("x"), real_train(cfg))[1])
    res = _search(tmp_path, monkeypatch, capsys, "hydra.sweeper.n_trials=5")
    assert len(calls) == 3, res.err[-3000:]  # only what was left of the budget
    study = _study(sweep)
    trials = study.trials
    with capsys.disabled():
        print("\nresumed search:", [(t.number, t.state.name, t.value) for t in trials])
    assert [t.number for t in trials] == [0, 1, 2, 3, 4, 5]
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL] + [
        TrialState.COMPLETE
    ] * 3
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == 5 and len({tuple(sorted(t.params.items())) for t in done}) == 5
    for old, new in zip(first[:2], trials[:2], strict=True):  # the first two kept as they were
        assert (new.params, new.value) == (old.params, old.value)
    # the RUNNING trial: FAIL, marked as cut short (so re-tried: 3 new trials, not 2)
    assert trials[2].system_attrs.get(DIED_KEY) is True
    assert "recorded as FAIL, re-tried within the budget" in res.out + res.err
    # job k is trial k; the first run's job dirs were not written again
    assert [t.system_attrs[JOB_KEY] for t in trials[3:]] == [3, 4, 5]
    assert {n: _snapshot(sweep / str(n)) for n in (0, 1)} == jobs_before
    assert "SweeperDied" in (sweep / "2" / "error.txt").read_text()
    for n in (3, 4, 5):
        metrics = json.loads((sweep / str(n) / "metrics.json").read_text())
        assert metrics["val/acc_best"] == pytest.approx(trials[n].value)
    # the report and the best parameters cover every trial of the study, old and new
    with (sweep / "report.csv").open() as fh:
        rows = {r["job"]: r["status"] for r in csv.DictReader(fh)}
    assert rows == {"0": "ok", "1": "ok", "2": "failed", "3": "ok", "4": "ok", "5": "ok"}
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["trials"] == 6
    assert results["best_trial"] == study.best_trial.number
    assert results["best_value"] == max(t.value for t in done)
    assert results["best_params"] == study.best_trial.params
    # The cut-short trial was re-tried within the budget: reported as failed (above), not a
    # failure of the resumed search, which exits 0.
    assert res.status == 0, res.err[-3000:]
    assert not any("jobs failed" in ln for ln in res.error_lines)

    # A third time: the study is finished, nothing is trained, nothing changes.
    calls.clear()
    res = _search(tmp_path, monkeypatch, capsys, "hydra.sweeper.n_trials=5")
    assert calls == []
    assert "study mit_fer is finished: 5 of 5 trials" in res.out + res.err
    assert _trials(sweep) == [(t.number, t.state.name, t.value) for t in trials]


def test_finished_study_trains_nothing_and_n_trials_is_the_total(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    training = FakeTraining()
    monkeypatch.setattr(train_cli, "train", training)
    res = _search(tmp_path, monkeypatch, capsys, "hydra.sweeper.n_trials=2")
    assert res.status == 0, res.err[-3000:]
    assert len(training.calls) == 2
    sweep = _sweep(tmp_path)
    before = _trials(sweep)

    res = _search(tmp_path, monkeypatch, capsys, "hydra.sweeper.n_trials=2")
    assert res.status == 0, res.err[-3000:]
    assert len(training.calls) == 2  # nothing trained
    assert _trials(sweep) == before
    said = [ln for ln in (res.out + res.err).splitlines() if "is finished" in ln]
    assert len(said) == 1 and "study mit_fer is finished: 2 of 2 trials" in said[0]
    assert sorted(p.name for p in sweep.iterdir() if p.name.isdigit()) == ["0", "1"]

    # A larger budget: only the difference is run, into the next job dir.
    res = _search(tmp_path, monkeypatch, capsys, "hydra.sweeper.n_trials=3")
    assert res.status == 0, res.err[-3000:]
    assert len(training.calls) == 3 and training.calls[-1].endswith("/mit_fer/2")
    assert [n for n, _, _ in _trials(sweep)] == [0, 1, 2]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] == max(v for _, _, v in _trials(sweep) if v is not None)


def test_a_trial_that_fails_on_its_own_counts_toward_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    training = FakeTraining(fail=(1,))
    monkeypatch.setattr(train_cli, "train", training)
    res = _search(tmp_path, monkeypatch, capsys, "hydra.sweeper.n_trials=2")
    sweep = _sweep(tmp_path)
    assert [s for _, s, _ in _trials(sweep)] == ["FAIL", "COMPLETE"], res.err[-3000:]
    assert res.status == 1  # the failed job, counted by the app
    _search(tmp_path, monkeypatch, capsys, "hydra.sweeper.n_trials=2")
    assert len(training.calls) == 2  # not re-tried: it failed by itself
    assert tally(_study(sweep).trials) == Tally(complete=1, failed=1)


#: A change of direction or of search space, and the key the refusal names.
CHANGES = [
    ("hydra.sweeper.direction=minimize", "hydra.sweeper.direction:"),
    (
        "hydra.sweeper.params={optimizer.lr:'tag(log, interval(0.001, 0.1))'}",
        "hydra.sweeper.params.optimizer.lr:",
    ),
    ("seed=choice(1,2)", "search space key seed:"),
]


def test_a_resume_with_another_direction_or_space_is_refused(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # one stored study, each change refused against it (a refusal changes nothing stored)
    training = FakeTraining()
    monkeypatch.setattr(train_cli, "train", training)
    assert _search(tmp_path, monkeypatch, capsys, "hydra.sweeper.n_trials=1").status == 0
    for change, key in CHANGES:
        res = _search(tmp_path, monkeypatch, capsys, "hydra.sweeper.n_trials=2", change)
        assert res.status == 2, (change, res.err[-3000:])
        (line,) = res.error_lines
        assert line.startswith(f"fersuite-train: error: {key}"), line
        assert "stored study 'mit_fer'" in line and "hydra.sweeper.study_name" in line
        assert len(training.calls) == 1
        assert len(_study(_sweep(tmp_path)).trials) == 1


def test_a_sweep_dir_with_jobs_of_another_run_is_not_written_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = tmp_path / "old_sweep"
    (sweep / "0" / ".hydra").mkdir(parents=True)
    (sweep / "0" / "metrics.json").write_text('{"val/acc_best": 0.5}')
    before = _snapshot(sweep / "0")
    training = FakeTraining()
    monkeypatch.setattr(train_cli, "train", training)
    res = _search(
        tmp_path, monkeypatch, capsys, "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}"
    )
    assert res.status == 0, res.err[-3000:]
    assert _snapshot(sweep / "0") == before
    (t0, t1) = _study(sweep).trials
    assert (t0.system_attrs[JOB_KEY], t1.system_attrs[JOB_KEY]) == (1, 2)
    assert [Path(c).name for c in training.calls] == ["1", "2"]


# ------------------------------------------------------------------------------ the pieces


def test_a_dead_sweeper_is_told_from_a_live_one() -> None:
    me = {"host": "h", "pid": 100, "token": "now"}
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = int(proc.stdout)
    assert sweeper_is_gone({"host": "h", "pid": dead, "token": "t"}, me)  # process gone
    assert sweeper_is_gone({"host": "h", "pid": 100, "token": "before"}, me)  # earlier sweep
    assert sweeper_is_gone(None, me)  # a sweeper that did not record itself
    import os

    live = {"host": "h", "pid": os.getppid(), "token": "t"}
    assert not sweeper_is_gone(live, me)
    assert not sweeper_is_gone({"host": "other", "pid": dead, "token": "t"}, me)
    assert not sweeper_is_gone({"host": "h", "pid": 100, "token": "now"}, me)


def test_budget_counts_finished_and_running_trials_not_cut_short_ones() -> None:
    study = optuna.create_study()
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.FAIL):
        t = study.ask()
        if state == TrialState.COMPLETE:
            study.tell(t, 1.0)
        else:
            if len(study.trials) == 4:
                t.set_system_attr(DIED_KEY, True)
            study.tell(t, state=state)
    study.ask()  # running
    count = tally(study.trials)
    assert count == Tally(complete=1, pruned=1, failed=1, running=1, died=1)
    assert (count.counted, count.left(5), count.left(3)) == (4, 1, 0)


def test_storage_is_the_sweep_dirs_sqlite_file_or_a_url(tmp_path: Path) -> None:
    storage = open_storage(None, tmp_path / "sweep")
    assert (tmp_path / "sweep" / "optuna.db").is_file()
    assert storage.url == f"sqlite:///{tmp_path / 'sweep' / 'optuna.db'}"  # type: ignore[attr-defined]
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    assert open_storage(url, tmp_path / "sweep").url == url  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"^hydra\.sweeper\.storage: expected null"):
        open_storage("optuna.db", tmp_path)
    with pytest.raises(ConfigError, match=r"^hydra\.sweeper\.storage: cannot open nosuchdb://"):
        open_storage("nosuchdb://u:secret@host/db", tmp_path)
    with pytest.raises(ConfigError) as err:
        open_storage("nosuchdb://u:secret@host/db", tmp_path)
    assert "secret" not in str(err.value)
