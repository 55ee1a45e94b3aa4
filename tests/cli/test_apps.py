"""Every console script answers bad input with one line and exit status 2 (issue 12, defect 8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fersuite.config import validate_config
from fersuite.errors import ConfigError
from tests._helpers.apps import run_app
from tests.conftest import TINY, run_env

#: (app, arguments with a misspelt key, text the one line must contain). A misspelt key that
#: composes (``+data.batch_szie``) is tests/reliability/test_config_schema.py's.
BAD_KEYS = [
    ("fersuite-train", [*TINY, "data.batch_szie=8"], "data.batch_szie"),
    ("fersuite-data", ["data.batch_szie=8"], "data.batch_szie"),
    ("fersuite-profile", ["profile.latency_rns=3"], "profile.latency_rns"),
    ("fersuite-export", ["export.opsett=17"], "export.opsett"),
    ("fersuite-predict", ["ckpt_path=x.onnx", "inputs=a.png", "batch_szie=2"], "batch_szie"),
    ("fersuite-report", [".", "--metrc", "test/acc"], "--metrc"),
    ("fersuite-report", ["sweeps=.", "metrc=test/acc"], "metrc"),
]


@pytest.mark.parametrize(("app", "args", "expected"), BAD_KEYS, ids=[b[0] for b in BAD_KEYS])
def test_a_bad_key_is_one_line_and_exit_status_2(
    tmp_path: Path, app: str, args: list[str], expected: str
) -> None:
    res = run_app(app, args, cwd=tmp_path, env=run_env(tmp_path))
    err = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2, res.stderr[-3000:]
    assert len(err) == 1, res.stderr[-3000:]
    assert err[0].startswith(f"{app}: error: ") and expected in err[0], err[0]
    assert "Traceback" not in res.stderr + res.stdout


def test_a_failed_run_is_exit_status_1_with_its_traceback_logged(tmp_path: Path) -> None:
    # A bug, not bad input: a callback target that raises a plain RuntimeError when built.
    res = run_app(
        "fersuite-train",
        [*TINY, "logger=none", "+callbacks.boom._target_=tests.cli.test_apps.Boom"],
        cwd=tmp_path,
        env=run_env(tmp_path),
    )
    assert res.returncode == 1, res.stderr[-3000:]
    out = res.stdout + res.stderr
    assert "Traceback" in out and "RuntimeError: boom" in out
    assert res.stderr.strip().splitlines()[-1].startswith("fersuite-train: failed: ")


class Boom:
    def __init__(self) -> None:
        raise RuntimeError("boom")


def test_distill_keys_are_validated_with_a_suggestion(cfg_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = cfg_factory(["task=distill", "+distill.teacher_outptus=cached"])
    with pytest.raises(
        ConfigError, match=r"distill\.teacher_outptus .*did you mean teacher_outputs"
    ):
        validate_config(cfg)
    cfg = cfg_factory(["task=distill", "distill.teacher_outputs=cahced"])
    with pytest.raises(ConfigError, match=r"distill\.teacher_outputs='cahced'"):
        validate_config(cfg)
    validate_config(cfg_factory(["task=distill"]))


def test_a_constructor_rejecting_its_config_is_a_user_error() -> None:
    """Hydra wraps what a ``_target_``'s constructor raises; the user error below still
    answers with one line and exit status 2 (e.g. callbacks.efficiency.threads=0)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from fersuite.errors import is_user_error, one_line

    with pytest.raises(InstantiationException) as info:
        instantiate({"_target_": "fersuite.callbacks.efficiency.EfficiencyCallback", "threads": 0})
    assert is_user_error(info.value)
    message = one_line(info.value)
    assert "threads" in message and "\n" not in message
    assert "Error in call to target" not in message
    assert not is_user_error(InstantiationException("no cause"))
