"""FER2013 (fer2013.csv) and FER+ (fer2013new.csv): round trips, bad input, the bulk parser."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fersuite.data.errors import BadSamples
from fersuite.data.fer2013 import (
    FER2013_CLASSES,
    FER2013DataModule,
    parse_pixel_fields,
    parse_pixel_row,
    read_fer2013,
)
from fersuite.data.ferplus import FERPLUS_CLASSES, FerPlusVotes, ferplus_targets
from fersuite.errors import DataFormatError
from fersuite.labels import canonical_name
from tests.data.fixtures import FER2013_NAMES, FERPLUS_NAMES, write_fer2013, write_ferplus


def _dm(root: Path, tmp_path: Path, **kw: object) -> FER2013DataModule:
    args: dict[str, object] = {
        "root": str(root),
        "cache_dir": str(tmp_path / "cache"),
        "num_workers": 0,
        "batch_size": 8,
    }
    args.update(kw)
    return FER2013DataModule(**args)  # type: ignore[arg-type]


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _rewrite(path: Path, line: int, text: str) -> None:
    lines = _lines(path)
    lines[line - 1] = text
    path.write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("crlf", [False, True])
def test_round_trip_splits_labels_pixels(tmp_path: Path, crlf: bool) -> None:
    w = write_fer2013(tmp_path / "fer", n_per_split={"train": 9, "val": 5, "test": 6}, crlf=crlf)
    dm = _dm(w.root, tmp_path)
    dm.setup()
    assert dm.class_names == FER2013_CLASSES
    assert dm.num_classes == 7 and not dm.has_va
    assert [canonical_name(n) for n in FER2013_NAMES] == list(dm.class_names)
    for split in ("train", "val", "test"):
        expected = w.split(split)  # file order within the split
        got = dm.splits[split]
        assert len(got) == len(expected)
        assert got.images.shape[1:] == (48, 48) and got.images.dtype == np.uint8
        assert got.valence is None
        for i, s in enumerate(expected):
            assert s.pixels is not None
            np.testing.assert_array_equal(got.images[i], s.pixels)
            assert dm.class_names[int(got.expression[i])] == s.name
    assert dm.skipped == 0


def test_quoted_fields_are_read(tmp_path: Path) -> None:
    w = write_fer2013(tmp_path / "fer", n_per_split=3, shuffle=False)
    path = w.files[0]
    lines = _lines(path)
    label, pixels, usage = lines[1].split(",")
    lines[1] = f'"{label}","{pixels}","{usage}"'
    path.write_text("\n".join(lines) + "\n")
    table = read_fer2013(path, BadSamples())
    assert w.samples[0].pixels is not None
    np.testing.assert_array_equal(table.images[0], w.samples[0].pixels)
    assert len(table.labels) == 9


def test_batches_from_the_cache(tmp_path: Path) -> None:
    w = write_fer2013(tmp_path / "fer", n_per_split=10)
    dm = _dm(w.root, tmp_path, image_size=32, in_chans=3)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (8, 3, 32, 32)
    assert batch["expression"].max() < 7
    assert "valence" not in batch


# --------------------------------------------------------------------------------------------
# The bulk pixel parser agrees with the row-by-row one
# --------------------------------------------------------------------------------------------

_pixel_rows = st.lists(
    st.lists(st.integers(0, 255), min_size=6, max_size=6), min_size=1, max_size=40
)


@settings(max_examples=40, deadline=None)
@given(rows=_pixel_rows, spaces=st.integers(1, 3))
def test_bulk_parse_matches_reference(rows: list[list[int]], spaces: int) -> None:
    sep = " " * spaces
    fields = [sep.join(str(v) for v in r).encode() for r in rows]
    values, errors = parse_pixel_fields(fields, count=6)
    assert errors == {}
    np.testing.assert_array_equal(values, np.array(rows, dtype=np.uint8))


_corruptions = st.sampled_from(
    ["drop", "extra", "letter", "256", "999", "1000", "neg", "float", "comma", "empty", "tab"]
)


def _corrupt(tokens: list[str], kind: str, pos: int) -> str:
    t = list(tokens)
    if kind == "drop":
        del t[pos]
    elif kind == "extra":
        t.insert(pos, "7")
    elif kind == "letter":
        t[pos] = t[pos] + "x"
    elif kind in ("256", "999", "1000"):
        t[pos] = kind
    elif kind == "neg":
        t[pos] = "-" + t[pos]
    elif kind == "float":
        t[pos] = t[pos] + ".5"
    elif kind == "comma":
        t[pos] = t[pos] + ",3"
    elif kind == "empty":
        return ""
    elif kind == "tab":
        t[pos] = "\t" + t[pos] + "\x00"
    return " ".join(t)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.lists(st.integers(0, 255), min_size=5, max_size=5), min_size=1, max_size=70),
    which=st.integers(0, 10**6),
    pos=st.integers(0, 4),
    kind=_corruptions,
)
def test_bulk_parse_flags_exactly_the_bad_row(
    rows: list[list[int]], which: int, pos: int, kind: str
) -> None:
    fields = [" ".join(str(v) for v in r).encode() for r in rows]
    bad_row = which % len(rows)
    fields[bad_row] = _corrupt([str(v) for v in rows[bad_row]], kind, pos).encode()
    values, errors = parse_pixel_fields(fields, count=5)
    assert list(errors) == [bad_row], (kind, fields[bad_row])
    for i, r in enumerate(rows):
        if i != bad_row:
            np.testing.assert_array_equal(values[i], r)
    with pytest.raises(ValueError):
        parse_pixel_row(fields[bad_row], count=5)


# --------------------------------------------------------------------------------------------
# Malformed files: one-line errors naming file:line, or counted skips
# --------------------------------------------------------------------------------------------

_ROW_DEFECTS = {
    "few pixels": (lambda lab, pix, use: f"{lab},{pix.rsplit(' ', 1)[0]},{use}", "2303 values"),
    "many pixels": (lambda lab, pix, use: f"{lab},{pix} 12,{use}", "2305 values"),
    "non-integer pixel": (
        lambda lab, pix, use: f"{lab},abc {pix.split(' ', 1)[1]},{use}",
        "not an integer",
    ),
    "pixel > 255": (lambda lab, pix, use: f"{lab},300 {pix.split(' ', 1)[1]},{use}", "0..255"),
    "label out of range": (lambda lab, pix, use: f"7,{pix},{use}", "emotion=7"),
    "label not an int": (lambda lab, pix, use: f"happy,{pix},{use}", "emotion='happy'"),
    "bad usage": (lambda lab, pix, use: f"{lab},{pix},Train", "Usage='Train'"),
    "missing field": (lambda lab, pix, use: f"{lab},{pix}", "expected 3"),
    "extra field": (lambda lab, pix, use: f"{lab},{pix},{use},x", "expected 3"),
}


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(defect=st.sampled_from(sorted(_ROW_DEFECTS)), which=st.integers(0, 20))
def test_malformed_row_error_names_file_and_line(
    tmp_path_factory: pytest.TempPathFactory, defect: str, which: int
) -> None:
    root = tmp_path_factory.mktemp("fer")
    w = write_fer2013(root, n_per_split=7)
    path = w.files[0]
    line = 2 + which
    lab, pix, use = _lines(path)[line - 1].split(",")
    make, expected = _ROW_DEFECTS[defect]
    _rewrite(path, line, make(lab, pix, use))
    with pytest.raises(DataFormatError) as err:
        read_fer2013(path, BadSamples("error"))
    msg = str(err.value)
    assert f"{path}:{line}:" in msg and expected in msg, msg
    assert "\n" not in msg
    # skip: the row is dropped and counted, every other row is intact
    bad = BadSamples("skip")
    table = read_fer2013(path, bad)
    assert bad.count == 1
    assert len(table.labels) == len(w.samples) - 1
    good = [s for s in w.samples if s.line != line]
    for i, s in enumerate(good):
        assert s.pixels is not None
        np.testing.assert_array_equal(table.images[i], s.pixels)
        assert table.labels[i] == s.label


def test_first_bad_line_is_reported(tmp_path: Path) -> None:
    w = write_fer2013(tmp_path / "fer", n_per_split=7)
    path = w.files[0]
    lines = _lines(path)
    lab, pix, use = lines[9].split(",")  # line 10
    lines[9] = f"{lab},{pix} 1,{use}"  # pixel error at line 10
    lab, pix, use = lines[15].split(",")  # line 16
    lines[15] = f"9,{pix},{use}"  # label error at line 16
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"fer2013\.csv:10: pixels has 2305 values"):
        read_fer2013(path, BadSamples("error"))
    dm = _dm(w.root, tmp_path, on_bad_sample="skip")
    dm.setup()
    assert dm.skipped == 2
    assert sum(len(s) for s in dm.splits.values()) == 19


@pytest.mark.parametrize(
    ("header", "match"),
    [
        ("emotion,pixels", "expected 'emotion,pixels,Usage'"),
        ("label,pixels,Usage", "header is 'label,pixels,Usage'"),
        ("", "expected 'emotion,pixels,Usage'"),
    ],
)
def test_wrong_header(tmp_path: Path, header: str, match: str) -> None:
    w = write_fer2013(tmp_path / "fer", n_per_split=2)
    _rewrite(w.files[0], 1, header)
    with pytest.raises(DataFormatError, match=match) as err:
        _dm(w.root, tmp_path).setup()
    assert ":1:" in str(err.value)


def test_missing_root_and_file_name_the_expected_path(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError) as err:
        _dm(tmp_path / "nowhere", tmp_path).setup()
    msg = str(err.value)
    assert str(tmp_path / "nowhere") in msg and "does not exist" in msg
    assert "emotion,pixels,Usage" in msg
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError) as err:
        _dm(tmp_path / "empty", tmp_path).setup()
    assert str(tmp_path / "empty" / "fer2013.csv") in str(err.value)
    assert "2304 space-separated integers" in str(err.value)
    with pytest.raises(DataFormatError, match=r"data\.root is not set"):
        FER2013DataModule(root=None)


def test_header_only_and_all_bad_rows(tmp_path: Path) -> None:
    root = tmp_path / "fer"
    root.mkdir()
    (root / "fer2013.csv").write_text("emotion,pixels,Usage\n")
    with pytest.raises(DataFormatError, match="no data rows"):
        _dm(root, tmp_path).setup()
    (root / "fer2013.csv").write_text("emotion,pixels,Usage\n3,1 2 3,Training\n")
    with pytest.raises(DataFormatError, match="no usable samples"):
        _dm(root, tmp_path, on_bad_sample="skip").setup()


def test_bad_policy_value(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="on_bad_sample='ignore'"):
        _dm(tmp_path, tmp_path, on_bad_sample="ignore")


# --------------------------------------------------------------------------------------------
# Class imbalance: weighted sampler and automatic class weights
# --------------------------------------------------------------------------------------------


def test_weighted_sampler_and_auto_weights_favour_rare_disgust(tmp_path: Path) -> None:
    import torch

    torch.manual_seed(0)  # the train sampler's seed
    labels = [0] * 12 + [1] + [2] * 10 + [3] * 14 + [4] * 10 + [5] * 8 + [6] * 9
    w = write_fer2013(
        tmp_path / "fer", n_per_split={"train": 64, "val": 7, "test": 7}, train_labels=labels
    )
    dm = _dm(w.root, tmp_path, sampler="weighted", batch_size=16)
    dm.setup("fit")
    weights = dm.class_weights()
    assert int(weights.argmax()) == FER2013_CLASSES.index("disgust")
    assert weights[1] > 5 * weights[3]
    drawn = []
    for _ in range(6):
        for batch in dm.train_dataloader():
            drawn.append(batch["expression"])
    drawn_t = np.concatenate([d.numpy() for d in drawn])
    share = float(np.mean(drawn_t == 1))
    assert share > 0.06, share  # 1/64 = 1.6% without weighting; ~1/7 with it
    random_dm = _dm(w.root, tmp_path, sampler="random", batch_size=16)
    random_dm.setup("fit")
    plain = np.concatenate([b["expression"].numpy() for b in random_dm.train_dataloader()])
    assert np.mean(plain == 1) < 0.05


# --------------------------------------------------------------------------------------------
# FER+
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["majority", "soft"])
def test_ferplus_targets_round_trip(tmp_path: Path, mode: str) -> None:
    fer = write_fer2013(tmp_path / "fer", n_per_split=16)
    plus = write_ferplus(tmp_path / "fer", fer)
    dm = _dm(fer.root, tmp_path, ferplus_labels=str(plus.files[0]), ferplus_mode=mode)
    assert dm.class_names == FERPLUS_CLASSES == FERPLUS_NAMES
    dm.setup()
    for split in ("train", "val", "test"):
        got = dm.splits[split]
        if mode == "majority":
            expected = [s for s in plus.samples if s.split == split and s.name is not None]
            assert got.expression.dtype == np.int64
            assert [dm.class_names[int(v)] for v in got.expression] == [s.name for s in expected]
        else:
            expected = [s for s in plus.samples if s.split == split and s.soft is not None]
            assert got.expression.shape == (len(expected), 8)
            np.testing.assert_allclose(got.expression, [s.soft for s in expected], atol=1e-6)
        assert len(got) == len(expected)
        for i, s in enumerate(expected):
            assert s.pixels is not None
            np.testing.assert_array_equal(got.images[i], s.pixels)
    dropped = dm.info["dropped"]
    no_name = sum(1 for line in _lines(plus.files[0])[1:] if line.split(",")[1] == "")
    assert no_name > 0 and dropped["ferplus_no_image"] == no_name
    assert dropped["ferplus_unknown_or_nf"] > 0
    # every row is kept or counted under exactly one reason
    assert sum(dropped.values()) + sum(len(dm.splits[s]) for s in dm.splits) == len(plus.samples)
    if mode == "majority":
        assert dropped["ferplus_no_majority"] > 0
    else:
        assert "ferplus_no_majority" not in dropped


_E = {name: i for i, name in enumerate(("neu", "hap", "sur", "sad", "ang", "dis", "fea", "con"))}


def _votes(**counts: int) -> list[int]:
    v = [0] * 10
    for name, n in counts.items():
        v[{"unk": 8, "nf": 9}.get(name, _E.get(name, -1))] = n
    return v


# (votes, kept class or the drop reason) under the FER+ authors' majority rule.
_MAJORITY_CASES = [
    (_votes(neu=10), "neu"),
    (_votes(hap=4, sad=1), "hap"),  # the single vote is dropped: 4 of 4
    (_votes(hap=5, sad=4, ang=1), "hap"),  # 5 of 10 raw; 5 of 9 once the single is dropped
    (_votes(hap=6, sad=2, ang=1, dis=1), "hap"),  # 6 of 8
    (_votes(sur=2, fea=1, con=1, unk=1), "sur"),  # 2 of 2
    (_votes(hap=3, sad=3, ang=2), "ferplus_no_majority"),  # 3 of 8
    (_votes(hap=5, sad=5), "ferplus_no_majority"),  # exactly half is not a majority
    (_votes(hap=4, sad=3, ang=3), "ferplus_no_majority"),  # a plurality only
    (_votes(hap=5, unk=3, nf=2), "ferplus_no_majority"),  # unknown/NF votes count: 5 of 10
    (_votes(hap=5, unk=4, nf=1), "hap"),  # 5 of 9
    (_votes(neu=1, hap=1, sad=1, ang=1, unk=1, nf=1), "ferplus_no_majority"),  # all singles
    (_votes(unk=6, hap=4), "ferplus_unknown_or_nf"),
    (_votes(nf=9, hap=1), "ferplus_unknown_or_nf"),
    (_votes(unk=5, nf=5), "ferplus_no_majority"),
]


def test_ferplus_majority_follows_the_fer_plus_authors_rule() -> None:
    votes = np.array([v for v, _ in _MAJORITY_CASES], dtype=np.int32)
    n = len(votes)
    data = FerPlusVotes(votes, np.ones(n, dtype=bool), np.ones(n, dtype=bool))
    keep, hard, _, dropped = ferplus_targets(data, "majority")
    for i, (v, expected) in enumerate(_MAJORITY_CASES):
        reasons = [k for k, rows in dropped.items() if rows[i]]
        if expected in _E:
            assert keep[i] and not reasons, (v, reasons)
            assert int(hard[i]) == _E[expected], v
        else:
            assert not keep[i] and reasons == [expected], (v, reasons)
    assert set(dropped) == {"ferplus_no_image", "ferplus_unknown_or_nf", "ferplus_no_majority"}
    # soft mode keeps the raw distribution; it drops only rows that unknown/NF top
    keep_soft, _, soft, dropped_soft = ferplus_targets(data, "soft")
    np.testing.assert_allclose(soft[1], [0, 0.8, 0, 0.2, 0, 0, 0, 0])
    assert keep_soft[5] and keep_soft[6] and not keep_soft[11] and not keep_soft[13]
    assert int(dropped_soft["ferplus_unknown_or_nf"].sum()) == 4  # rows 10..13


def test_ferplus_soft_trains_in_the_loss() -> None:
    import torch

    from fersuite.losses.affect import AffectLoss
    from fersuite.types import AffectOutput

    logits = torch.zeros(2, 8, requires_grad=True)
    out = AffectOutput(logits, torch.zeros(2), torch.zeros(2))
    soft = torch.tensor([[0.7, 0.3, 0, 0, 0, 0, 0, 0], [0, 0, 1.0, 0, 0, 0, 0, 0]])
    terms = AffectLoss(valence_weight=0, arousal_weight=0)(out, {"expression": soft})
    terms["loss"].backward()
    assert logits.grad is not None and float(logits.grad[0, 0]) < 0


def test_ferplus_misaligned_usage_and_row_count(tmp_path: Path) -> None:
    fer = write_fer2013(tmp_path / "fer", n_per_split=4, shuffle=False)
    plus = write_ferplus(tmp_path / "fer", fer)
    path = plus.files[0]
    lines = _lines(path)
    fields = lines[2].split(",")  # line 3: a Training row
    fields[0] = "PrivateTest"
    lines[2] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"fer2013new\.csv:3: Usage=PrivateTest but"):
        _dm(fer.root, tmp_path, ferplus_labels=str(path)).setup()
    path.write_text("\n".join(lines[:-2]) + "\n")
    with pytest.raises(DataFormatError, match=r"has 10 data rows but .* has 12"):
        _dm(fer.root, tmp_path, ferplus_labels=str(path), on_bad_sample="skip").setup()
    with pytest.raises(DataFormatError, match=r"data\.ferplus_labels=.*not found"):
        _dm(fer.root, tmp_path, ferplus_labels=str(tmp_path / "nope.csv")).setup()
    with pytest.raises(DataFormatError, match="ferplus_mode='vote'"):
        _dm(fer.root, tmp_path, ferplus_labels=str(path), ferplus_mode="vote")


def test_ferplus_bad_votes_and_header(tmp_path: Path) -> None:
    fer = write_fer2013(tmp_path / "fer", n_per_split=4, shuffle=False)
    plus = write_ferplus(tmp_path / "fer", fer)
    path = plus.files[0]
    lines = _lines(path)
    fields = lines[4].split(",")
    fields[5] = "x"
    lines[4] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"fer2013new\.csv:5: sadness='x' is not an integer"):
        _dm(fer.root, tmp_path, ferplus_labels=str(path)).setup()
    lines[0] = lines[0].replace("NF", "nf")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"fer2013new\.csv:1: header is"):
        _dm(fer.root, tmp_path, ferplus_labels=str(path)).setup()
