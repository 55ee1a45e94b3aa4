"""Any data, any bytes: the card readers return a checked card or one user error, nothing else.

``ModelCard.from_dict`` (a checkpoint's metadata) and ``read_sidecar`` (an exported model's
``model.json``) are fed arbitrary JSON-like values, mutations of an honest card and arbitrary
bytes. Each answer is a card whose values are inside the bounds, or a one-line
``ModelCardFormatError``/``ModelCardError``/``PredictError`` naming the file; never another
exception, and no file is written, created or deleted.
"""

from __future__ import annotations

import copy
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fersuite.card import BOUNDS, FaceCrop, InputSpec, ModelCard
from fersuite.checkpoint import read_card
from fersuite.errors import ModelCardError, ModelCardFormatError, PredictError, is_user_error
from fersuite.inference import read_sidecar

#: an honest card, as fersuite-train stores it (plain JSON data)
HONEST: dict[str, Any] = {
    "card_version": 1,
    "model_cfg": {
        "_target_": "fersuite.models.registry.create_model",
        "arch": "lightweight_cnn",
        "in_chans": 1,
        "input_size": 48,
        "width_mult": 0.25,
        "expansion_channels": 32,
    },
    "class_names": ["neutral", "happy", "sad"],
    "has_va": True,
    "input": {"size": 48, "channels": 1, "mean": [0.5], "std": [0.5]},
    "face_crop": FaceCrop().to_dict(),
    "input_size": 48,
    "in_chans": 1,
    "mean": [0.5],
    "std": [0.5],
}
REFUSALS = (ModelCardFormatError, ModelCardError, PredictError)
FAST = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

_leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["${oc.env:HOME}", "../x", "a\nb", "", "happy", "b0", 1e300, 10**40])
)
_json = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path into ``value`` (dict keys and list indices)."""
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


PATHS = _paths(HONEST)[1:]


@st.composite
def mutated_cards(draw: st.DrawFn) -> dict[str, Any]:
    """The honest card with one to three values replaced, removed or added."""
    card = copy.deepcopy(HONEST)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent: Any = card
        try:
            for k in path[:-1]:
                parent = parent[k]
            action = draw(st.sampled_from(["replace", "delete", "add"]))
            if action == "replace":
                parent[path[-1]] = draw(_json)
            elif action == "delete" and isinstance(parent, dict):
                del parent[path[-1]]
            elif isinstance(parent, dict):
                parent[draw(st.text(max_size=8))] = draw(_json)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed or replaced the parent
    return card


def _check_card(card: ModelCard) -> None:
    """An accepted card holds plain values inside the bounds."""
    assert 1 <= card.input.size <= BOUNDS.max_side and card.input.channels in (1, 3)
    for v in (*card.input.mean, *card.input.std):
        assert isinstance(v, float) and math.isfinite(v)
    assert all(v >= BOUNDS.std[0] for v in card.input.std)
    assert 1 <= len(card.class_names) <= BOUNDS.max_classes
    assert len(set(card.class_names)) == len(card.class_names)
    for name in card.class_names:
        assert isinstance(name, str) and 1 <= len(name) <= BOUNDS.max_name_len
        assert "/" not in name and "\\" not in name and ".." not in name and "\n" not in name
        assert "${" not in name
    assert isinstance(card.has_va, bool) and isinstance(card.face_crop, FaceCrop)
    assert card.crop_size <= BOUNDS.max_side
    # a checked card round-trips
    assert read_card(json.loads(json.dumps(card.to_dict()))) == card


def _read(raw: Any) -> None:
    try:
        card = read_card(raw, "some/m.ckpt")
    except REFUSALS as exc:
        assert is_user_error(exc)
        text = str(exc)
        assert text.startswith("some/m.ckpt: ") and "\n" not in text and len(text) < 1000
        return
    _check_card(card)


class _Folder:
    """A temporary folder with a model file, and a check that nothing else appears in it or
    in the folder beside it (the victim)."""

    def __init__(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.root = Path(self.tmp.name)
        self.export = self.root / "export"
        self.export.mkdir()
        self.model = self.export / "model.pt"
        self.model.write_bytes(b"not read")
        self.victim = self.root / "victim.txt"
        self.victim.write_text("precious\n")
        os.utime(self.victim, (1_000_000_000, 1_000_000_000))

    def listing(self) -> list[tuple[str, int, int]]:
        out = []
        for p in sorted(self.root.rglob("*")):
            if p.name != "model.json":
                st_ = p.stat()
                out.append((str(p.relative_to(self.root)), st_.st_size, st_.st_mtime_ns))
        return out

    def read(self, data: bytes) -> None:
        self.model.with_suffix(".json").write_bytes(data)
        before = self.listing()
        sidecar = str(self.model.with_suffix(".json"))
        try:
            card = read_sidecar(self.model)
        except REFUSALS as exc:
            text = str(exc)
            assert is_user_error(exc)
            assert text.startswith(f"{sidecar}: ") and "\n" not in text and len(text) < 1000
        else:
            _check_card(card)
        assert self.listing() == before
        assert self.victim.read_text() == "precious\n"


@pytest.fixture(scope="module")
def folder() -> Any:
    f = _Folder()
    yield f
    f.tmp.cleanup()


@FAST
@given(raw=_json)
def test_any_json_value_is_a_card_or_one_user_error(folder: _Folder, raw: Any) -> None:
    before = folder.listing()
    _read(raw)
    assert folder.listing() == before


@FAST
@given(raw=mutated_cards())
def test_a_mutated_card_is_a_card_or_one_user_error(folder: _Folder, raw: dict[str, Any]) -> None:
    before = folder.listing()
    _read(raw)
    assert folder.listing() == before


@FAST
@given(data=st.binary(max_size=2000))
def test_any_bytes_as_a_sidecar_are_a_card_or_one_user_error(folder: _Folder, data: bytes) -> None:
    folder.read(data)


@FAST
@given(raw=mutated_cards() | _json, indent=st.none() | st.integers(0, 2))
def test_any_json_sidecar_is_a_card_or_one_user_error(
    folder: _Folder, raw: Any, indent: int | None
) -> None:
    folder.read(json.dumps(raw, indent=indent).encode())


@FAST
@given(
    raw=mutated_cards(),
    cut=st.integers(0, 2000),
    junk=st.binary(max_size=8) | st.sampled_from([b"[" * 40, b"]", b'"', b"\\", b"\xff"]),
)
def test_a_damaged_sidecar_is_a_card_or_one_user_error(
    folder: _Folder, raw: dict[str, Any], cut: int, junk: bytes
) -> None:
    text = json.dumps(raw).encode()
    folder.read(text[:cut] + junk + text[cut:])


_names = st.lists(
    st.text("abcXYZ019 _-+.", min_size=1, max_size=BOUNDS.max_name_len).filter(
        lambda n: n == n.strip() and ".." not in n and n.strip(". ")
    ),
    min_size=1,
    max_size=10,
    unique=True,
)
_stat = st.floats(0.001, 10.0, allow_nan=False)


@st.composite
def valid_cards(draw: st.DrawFn) -> ModelCard:
    channels = draw(st.sampled_from([1, 3]))
    size = draw(st.integers(32, BOUNDS.max_side))
    kind = draw(st.sampled_from(["center", "whole", "box", "detector"]))
    crop = FaceCrop(
        kind=kind,
        margin=draw(st.floats(0.0, 2.0)),
        detector=draw(st.sampled_from(["yunet", "haar"])) if kind == "detector" else None,
        score_threshold=draw(st.none() | st.floats(0.0, 1.0)),
        exif=draw(st.booleans()),
        crop_size=draw(st.none() | st.integers(1, BOUNDS.max_side)),
    )
    n = draw(st.sampled_from([1, channels]))
    spec = InputSpec(
        size,
        channels,
        tuple(draw(st.lists(st.floats(-5, 5), min_size=n, max_size=n))),
        tuple(draw(st.lists(_stat, min_size=n, max_size=n))),
    )
    kwargs = {"in_chans": channels, "input_size": size, "width_mult": draw(st.floats(0.1, 2.0))}
    return ModelCard(
        "lightweight_cnn", kwargs, tuple(draw(_names)), draw(st.booleans()), spec, crop
    )


@FAST
@given(card=valid_cards())
def test_a_valid_card_round_trips(card: ModelCard) -> None:
    data = json.loads(json.dumps(card.to_dict()))
    assert read_card(data, "m.json") == card
    assert read_card(card.to_dict(), "m.json").to_dict() == card.to_dict()
