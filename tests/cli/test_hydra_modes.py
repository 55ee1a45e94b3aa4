"""Two Hydra modes on one command line (e.g. ``-m`` with ``--cfg job``) are bad input: one
line naming both flags, exit status 2, for every Hydra app; one mode is left to Hydra."""

from __future__ import annotations

import sys

import pytest

from fersuite.apps import check_hydra_modes, run_app
from fersuite.errors import ConfigError


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["-m", "experiment=study_zoo", "--cfg", "job"], ["--multirun", "--cfg"]),
        (["--multirun", "--cfg=job"], ["--multirun", "--cfg"]),
        (["-c", "job", "-i"], ["--cfg", "--info"]),
        (["--run", "-m"], ["--run", "--multirun"]),
    ],
)
def test_two_modes_are_refused_naming_both(argv: list[str], named: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        check_hydra_modes(argv)
    assert " and ".join(named) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "argv",
    [[], ["-m", "seed=0,1"], ["--cfg", "job", "model=mit_fer"], ["model.mode=-m"], ["--info"]],
)
def test_one_mode_or_none_is_left_to_hydra(argv: list[str]) -> None:
    check_hydra_modes(argv)  # no exception


def test_an_app_exits_2_with_one_line_before_running(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ran: list[bool] = []
    monkeypatch.setattr(sys, "argv", ["fersuite-train", "-m", "seed=0,1", "--cfg", "job"])
    with pytest.raises(SystemExit) as info:
        run_app("train", lambda: ran.append(True))
    assert info.value.code == 2 and not ran
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]] and err[0].startswith("fersuite-train: error: --multirun and --cfg")
