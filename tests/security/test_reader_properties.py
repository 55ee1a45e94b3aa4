"""Property tests of the readers of foreign files: whatever the bytes or the JSON-like data,
each reader returns plain checked values or raises the one user error, never anything else,
and changes nothing on disk."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fersuite.callbacks.checkpointing import parse_state
from fersuite.deploy.executorch import ExecuTorchModel
from fersuite.deploy.onnx import OnnxModel
from fersuite.deploy.torchscript import TorchScriptModel
from fersuite.errors import UntrustedFileError

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
_leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(["../../x", "/etc/passwd", "${oc.env:HOME}", "best.ckpt"])
)
_json = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner, max_size=4)
    ),
    max_leaves=25,
)
_state_keys = st.sampled_from(
    [
        "dirpath",
        "best_model_path",
        "kth_best_model_path",
        "last_model_path",
        "best_model_score",
        "current_score",
        "kth_value",
        "best_k_models",
        "monitor",
    ]
)


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@SETTINGS
@given(state=_json | st.dictionaries(_state_keys, _json, max_size=9))
def test_resume_state_is_parsed_or_refused(state: Any) -> None:
    try:
        parsed = parse_state(state, "last.ckpt")
    except UntrustedFileError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("last.ckpt")
        return
    for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
        assert isinstance(getattr(parsed, key), str)


@settings(SETTINGS, max_examples=60)
@given(
    data=st.binary(max_size=2048)
    | st.builds(lambda b: b"PK\x03\x04" + b, st.binary(max_size=512))
    | st.builds(lambda b: b[:4] + b"ET12" + b, st.binary(min_size=4, max_size=512)),
    kind=st.sampled_from([".onnx", ".pt", ".pte"]),
)
def test_any_bytes_are_a_model_or_one_user_error(
    data: bytes, kind: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.mktemp("bytes")
    path = root / f"model{kind}"
    path.write_bytes(data)
    before = _listing(root)
    reader = {".onnx": OnnxModel, ".pt": TorchScriptModel, ".pte": ExecuTorchModel}[kind]
    try:
        reader(path)
    except UntrustedFileError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
    assert _listing(root) == before
    assert path.read_bytes() == data and os.path.isfile(path)
