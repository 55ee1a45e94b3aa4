"""A checkpoint's stored training-data record is data: parsed, bounded and never resolved.

The quantised exports rebuild calibration images from the record a checkpoint carries
(``fersuite.training_data``). Each crafted record below is handed to every export that reads
it; each must be refused with one line and exit status 2, with nothing outside the run changed.

Every payload is refused by the record's reader itself (:func:`recorded_data_config`, which
every quantised export calls on the stored record); in-process, every payload goes through one
quantised export and every export refuses two or more payloads (an app call is a Hydra
compose: each payload through each export repeated the same refusal 21 times).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fersuite.checkpoint import META_KEY
from fersuite.cli.export import main as export_main
from fersuite.data.record import DataRecord, read_data_record, recorded_data_config
from fersuite.errors import UntrustedFileError, UserError
from tests._helpers.apps import call_app
from tests.export.helpers import ZOO
from tests.security.apps import Victim

SYNTH = "fersuite.data.synthetic_datamodule.SyntheticDataModule"

#: (name, recorded values) -> what each payload would do if resolved or used.
PAYLOADS: dict[str, Any] = {
    # truncates the victim file when OmegaConf resolves it (oc.decode builds a _target_ node)
    "decode_open": lambda v: {
        "cache_dir": '${oc.decode:"{_target_: builtins.open, file: ' + str(v.file) + ', mode: w}"}'
    },
    # creates a directory beside the victim
    "decode_makedirs": lambda v: {
        "root": '${oc.decode:"{_target_: os.makedirs, name: ' + str(v.folder / "made") + '}"}'
    },
    # leaks an environment value into the outputs
    "env": lambda v: {"cache_dir": "${oc.env:FERSUITE_SECRET}"},
    # an escaped interpolation is still an interpolation to OmegaConf's grammar: refused too
    "escaped": lambda v: {"cache_dir": "\\${oc.env:FERSUITE_SECRET}"},
    # a billion faces: 7.45 GiB of labels before anything is checked
    "huge_split": lambda v: {"train_size": 1_000_000_000},
    "nan": lambda v: {"noise": math.nan},
    "newline": lambda v: {"cache_dir": "a\nb"},
}
FORMATS = {
    "onnx_int8": ["export.format=onnx", "export.quantize=int8"],
    "onnx_fp16": ["export.format=onnx", "export.quantize=fp16"],
    "executorch_int8": ["export.format=executorch", "export.quantize=int8"],
}


@pytest.fixture(scope="module")
def base_ckpt(fake_checkpoint) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    path = fake_checkpoint(ZOO["lightweight_cnn"])
    return torch.load(path, weights_only=True)


def _crafted(base: dict[str, Any], values: dict[str, Any], path: Path) -> Path:
    ckpt = dict(base)
    ckpt[META_KEY] = {**base[META_KEY], "training_data": _record(values)}
    torch.save(ckpt, path)
    return path


def _record(values: dict[str, Any]) -> dict[str, Any]:
    return {
        "target": SYNTH,
        "values": {"train_size": 40, "val_size": 20, "test_size": 8, **values},
    }


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_the_record_reader_refuses_every_crafted_record(
    payload: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = Victim.make(tmp_path / "home")
    before = victim.snapshot()
    monkeypatch.setenv("FERSUITE_SECRET", "s3cr3t-value")
    raw = _record(PAYLOADS[payload](victim))
    with pytest.raises(UserError) as err:
        recorded_data_config(raw, "some/m.ckpt")
    msg = str(err.value)
    assert msg.startswith("some/m.ckpt: ") and "training_data" in msg, msg
    assert "\n" not in msg and "s3cr3t-value" not in msg, msg
    victim.assert_untouched(before)


#: payload -> the export that refuses it in-process: each payload once, each format twice or more
CELLS = [(p, sorted(FORMATS)[i % len(FORMATS)]) for i, p in enumerate(sorted(PAYLOADS))]


@pytest.mark.parametrize(("payload", "fmt"), CELLS)
def test_every_quantised_export_refuses_a_crafted_data_record(
    payload: str,
    fmt: str,
    base_ckpt: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    victim = Victim.make(tmp_path / "home")
    before = victim.snapshot()
    monkeypatch.setenv("FERSUITE_SECRET", "s3cr3t-value")
    run = tmp_path / "run"
    run.mkdir()
    ckpt = _crafted(base_ckpt, PAYLOADS[payload](victim), run / "m.ckpt")
    args = [f"ckpt_path={ckpt}", f"export.out_dir={run / 'out'}", *FORMATS[fmt]]

    start = time.perf_counter()
    res = call_app(export_main, "fersuite-export", args, run, monkeypatch, capsys)
    elapsed = time.perf_counter() - start

    assert res.status == 2, res.err
    assert len(res.error_lines) == 1, res.err
    line = res.error_lines[0]
    assert str(ckpt) in line and "training_data" in line, line
    assert "Traceback" not in res.err and "s3cr3t-value" not in res.err + res.out
    assert not (run / "out").exists()
    assert elapsed < 5.0, f"refused after {elapsed:.1f} s"
    victim.assert_untouched(before)


def test_a_legitimate_record_is_read_as_plain_values() -> None:
    raw = {
        "target": SYNTH,
        "values": {
            "train_size": 40,
            "mean": [0.5],
            "cache_dir": "/data/cache",
            "augment": {"hflip": True},  # recorded by older versions: skipped unread
        },
    }
    rec = read_data_record(raw, "m.ckpt")
    assert rec == DataRecord(SYNTH, {"train_size": 40, "mean": [0.5], "cache_dir": "/data/cache"})
    assert read_data_record(None, "m.ckpt") is None


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ("synthetic", "training_data is a str"),
        ({"target": SYNTH, "values": {"k": "${x}"}}, r"training_data\.k"),
        ({"target": SYNTH, "values": {"k": [1, "${x}"]}}, r"training_data\.k\[1\]"),
        ({"target": SYNTH, "values": {"k": list(range(65))}}, "65 items"),
        ({"target": SYNTH, "values": {f"k{i}": i for i in range(65)}}, "65 keys"),
        ({"target": SYNTH, "values": {"k": "x" * 5000}}, "5000 characters"),
        ({"target": SYNTH, "values": {"k": 10**12}}, "out of range"),
        ({"target": SYNTH, "values": {"../k": 1}}, "identifier"),
        ({"target": 3, "values": {}}, "training_data.target"),
        ({"target": SYNTH, "values": {}, "extra": 1}, "unknown keys"),
        ({"target": SYNTH, "values": {"k": math.inf}}, "finite"),
        ({"target": SYNTH, "values": {"k": b"bytes"}}, "bytes"),
    ],
)
def test_each_bound_is_one_line_naming_the_file_and_key(raw: Any, match: str) -> None:
    with pytest.raises(UntrustedFileError, match=match) as err:
        read_data_record(raw, "some/m.ckpt")
    assert str(err.value).startswith("some/m.ckpt: ")
    assert "\n" not in str(err.value)


_leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
_json = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    raw=_json
    | st.fixed_dictionaries({"target": _json, "values": _json})
    | st.fixed_dictionaries(
        {"target": st.just(SYNTH), "values": st.dictionaries(st.text(max_size=8), _json)}
    )
)
def test_any_json_is_a_plain_record_or_one_user_error(raw: Any) -> None:
    try:
        rec = read_data_record(raw, "m.ckpt")
    except UntrustedFileError as exc:
        assert "\n" not in str(exc)
        return
    if rec is None:
        return
    assert isinstance(rec.target, str)
    for value in rec.values.values():
        items = value if isinstance(value, list) else [value]
        for v in items:
            assert v is None or isinstance(v, bool | int | float | str)
            assert not isinstance(v, float) or math.isfinite(v)
            assert not isinstance(v, str) or "${" not in v
