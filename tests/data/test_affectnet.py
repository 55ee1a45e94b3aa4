"""AffectNet (official layout): round trips, crops, VA masks, label rules, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fersuite.data.affectnet import AffectNetDataModule
from fersuite.errors import DataFormatError
from fersuite.labels import CANONICAL_CLASSES
from tests.data.fixtures import Sample, Written, write_affectnet

LIST = "Manually_Annotated_file_lists/training.csv"


def _dm(root: Path, tmp_path: Path, **kw: object) -> AffectNetDataModule:
    args: dict[str, object] = {
        "root": str(root),
        "cache_dir": str(tmp_path / "cache"),
        "num_workers": 0,
        "batch_size": 4,
        "in_chans": 3,
        "image_size": 32,
        "crop_margin": 0.0,
        "val_fraction": 0.25,
        "decode_workers": 2,
    }
    args.update(kw)
    return AffectNetDataModule(**args)  # type: ignore[arg-type]


def _by_color(dm: AffectNetDataModule, split: str) -> list[tuple[int, int, int]]:
    """The colour at the centre of every cached face (the fixture fills each box)."""
    imgs = dm.splits[split].images
    c = imgs.shape[1] // 2
    return [
        tuple(int(v) for v in img[c - 2 : c + 2, c - 2 : c + 2].reshape(-1, 3).mean(0))
        for img in imgs
    ]


def _close(a: tuple[int, ...], b: tuple[int, ...] | None, tol: int = 8) -> bool:
    assert b is not None
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def _match(dm: AffectNetDataModule, split: str, expected: list[Sample]) -> None:
    got = dm.splits[split]
    assert len(got) == len(expected)
    colors = _by_color(dm, split)
    for i, s in enumerate(expected):
        assert dm.class_names[int(got.expression[i])] == s.name
        assert _close(colors[i], s.color), (i, colors[i], s.color)
        valid = s.valence != -2
        assert bool(got.va_mask[i]) == valid
        if valid:
            assert got.valence[i] == pytest.approx(s.valence, abs=1e-6)
            assert got.arousal[i] == pytest.approx(s.arousal, abs=1e-6)


def test_round_trip_splits_labels_va_and_crops(tmp_path: Path) -> None:
    w = write_affectnet(tmp_path / "an", n=32, n_test=12)
    dm = _dm(w.root, tmp_path)
    assert dm.class_names == CANONICAL_CLASSES and dm.has_va
    dm.setup()
    # the official validation list is the test split, in file order, codes 8-10 dropped
    _match(dm, "test", w.split("test"))
    # train + val partition training.csv's kept rows; val is stratified (one per class here)
    kept = w.split("train")
    assert len(dm.splits["train"]) + len(dm.splits["val"]) == len(kept)
    val_labels = sorted(dm.class_names[int(v)] for v in dm.splits["val"].expression)
    assert val_labels == sorted(CANONICAL_CLASSES)
    colors = _by_color(dm, "train") + _by_color(dm, "val")
    labels = [*dm.splits["train"].expression, *dm.splits["val"].expression]
    for s in kept:  # every kept row is somewhere, with its label
        hits = [i for i, c in enumerate(colors) if _close(c, s.color, 3)]
        assert any(dm.class_names[int(labels[i])] == s.name for i in hits), s
    assert dm.info["dropped"] == {"none": 2, "uncertain": 2, "non_face": 2}
    assert dm.splits["train"].images.shape[1:] == (32, 32, 3)
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) >= {"image", "expression", "valence", "arousal", "va_mask"}


def test_val_split_is_seeded(tmp_path: Path) -> None:
    w = write_affectnet(tmp_path / "an", n=32)
    a, b, c = (_dm(w.root, tmp_path / str(i), split_seed=s) for i, s in enumerate((1, 1, 2)))
    for dm in (a, b, c):
        dm.setup()
    np.testing.assert_array_equal(a.splits["val"].images, b.splits["val"].images)
    assert not np.array_equal(a.splits["val"].images, c.splits["val"].images)


def _replace_image(w: Written, index: int, size: tuple[int, int], box: tuple[int, ...]) -> Sample:
    """Give test sample ``index`` a new image of ``size`` with its colour in ``box``."""
    s = w.split("test")[index]
    assert s.path is not None and s.color is not None and s.line is not None
    x, y, bw, bh = box
    img = Image.new("RGB", size, (90, 90, 90))
    img.paste(s.color, (x, y, x + bw, y + bh))
    img.save(w.root / "Manually_Annotated_Images" / s.path, quality=95)
    for col, v in zip((1, 2, 3, 4), box, strict=True):
        _edit(w, s.line, col, str(v), "Manually_Annotated_file_lists/validation.csv")
    return s


def test_crop_margin_includes_the_background_and_pads_outside(tmp_path: Path) -> None:
    w = write_affectnet(tmp_path / "an", n=16, n_test=8, with_dropped=False)
    inside = _replace_image(w, 0, (200, 200), (70, 70, 60, 60))
    corner = _replace_image(w, 1, (200, 200), (0, 0, 60, 60))
    dm = _dm(w.root, tmp_path, crop_margin=0.5, image_size=40)
    dm.setup()
    img = dm.splits["test"].images[0].astype(int)
    # the box is the middle half of the 2x crop: the border is the grey background
    assert np.abs(img[2, 2] - 90).max() <= 6 and np.abs(img[-3, -3] - 90).max() <= 6
    assert _close(tuple(img[20, 20]), inside.color)
    assert _close(tuple(img[13, 13]), inside.color, 12) and np.abs(img[7, 7] - 90).max() <= 12
    # a crop past the image edge is padded black
    img = dm.splits["test"].images[1].astype(int)
    assert img[3, 3].max() <= 6 and _close(tuple(img[25, 25]), corner.color)


def test_gray_cache_for_one_channel_models(tmp_path: Path) -> None:
    w = write_affectnet(tmp_path / "an", n=16, n_test=8)
    dm = _dm(w.root, tmp_path, in_chans=1, image_size=24)
    dm.setup()
    assert dm.splits["test"].images.shape[1:] == (24, 24)
    s = w.split("test")[0]
    assert s.color is not None
    gray = 0.299 * s.color[0] + 0.587 * s.color[1] + 0.114 * s.color[2]
    assert abs(int(dm.splits["test"].images[0][12, 12]) - gray) <= 6


def test_seven_classes_drop_contempt(tmp_path: Path) -> None:
    w = write_affectnet(tmp_path / "an", n=16, n_test=8)
    dm = _dm(w.root, tmp_path, num_classes=7)
    dm.setup()
    assert dm.num_classes == 7 and "contempt" not in dm.class_names
    n_contempt = sum(1 for s in w.samples if s.name == "contempt")
    assert dm.info["dropped"]["contempt"] == n_contempt
    total = sum(len(s) for s in dm.splits.values())
    assert total == sum(1 for s in w.samples if s.name not in (None, "contempt"))
    with pytest.raises(DataFormatError, match="num_classes=6"):
        _dm(w.root, tmp_path, num_classes=6)


def test_large_jpeg_is_decoded_reduced_and_cropped_right(tmp_path: Path) -> None:
    w = write_affectnet(tmp_path / "an", n=16, n_test=8, with_dropped=False)
    s = w.split("test")[0]
    assert s.path is not None and s.color is not None
    big = Image.new("RGB", (1600, 1200), (90, 90, 90))
    big.paste(s.color, (1000, 200, 1480, 680))
    big.save(w.root / "Manually_Annotated_Images" / s.path, quality=95)
    lst = w.root / "Manually_Annotated_file_lists/validation.csv"
    lines = lst.read_text().splitlines()
    f = lines[1].split(",")
    f[1:5] = ["1000", "200", "480", "480"]
    lines[1] = ",".join(f)
    lst.write_text("\n".join(lines) + "\n")
    dm = _dm(w.root, tmp_path, image_size=32)
    dm.setup()
    img = dm.splits["test"].images[0].astype(int)
    assert np.abs(img - np.array(s.color)).max() <= 10  # the whole crop is the face box


def _edit(w: Written, line: int, column: int, value: str, name: str = LIST) -> Path:
    path = w.root / name
    lines = path.read_text().splitlines()
    f = lines[line - 1].split(",")
    f[column] = value
    lines[line - 1] = ",".join(f)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        (6, "11", "expression=11 is out of range; expected 0..10"),
        (6, "happy", "expression='happy' is not an integer"),
        (7, "1.5", "valence=1.5 is out of range; expected -1..1 or -2"),
        (8, "nan", "arousal=nan is out of range"),
        (3, "0", "face_width=0 is out of range"),
        (2, "", "face_y='' is not a number"),
        (0, "../../etc/passwd", "subDirectory_filePath='../../etc/passwd'; expected a relative"),
    ],
)
def test_malformed_rows_name_file_and_line(
    tmp_path: Path, column: int, value: str, expected: str
) -> None:
    w = write_affectnet(tmp_path / "an", n=16, n_test=8)
    path = _edit(w, 5, column, value)
    with pytest.raises(DataFormatError) as err:
        _dm(w.root, tmp_path).setup()
    assert f"{path}:5: {expected}" in str(err.value)
    dm = _dm(w.root, tmp_path, on_bad_sample="skip")
    dm.setup()
    assert dm.skipped == 1
    kept_before = len(w.split("train"))
    row5 = next(s for s in w.samples if s.split == "train" and s.line == 5)
    assert len(dm.splits["train"]) + len(dm.splits["val"]) == kept_before - (row5.name is not None)


def test_missing_column_and_wrong_field_count(tmp_path: Path) -> None:
    w = write_affectnet(tmp_path / "an", n=16, n_test=8)
    path = w.root / LIST
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0].replace(",arousal", ""), *lines[1:]]) + "\n")
    with pytest.raises(DataFormatError, match=r"training\.csv:1: header lacks column\(s\) arousal"):
        _dm(w.root, tmp_path).setup()
    lines[3] = lines[3].rsplit(",", 1)[0]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"training\.csv:4: has 8 fields; expected 9"):
        _dm(w.root, tmp_path).setup()


@pytest.mark.parametrize("damage", ["missing", "truncated", "not_an_image", "box_outside"])
def test_bad_images_are_named(tmp_path: Path, damage: str) -> None:
    w = write_affectnet(tmp_path / "an", n=16, n_test=8, with_dropped=False)
    s = w.split("test")[2]
    assert s.path is not None
    img = w.root / "Manually_Annotated_Images" / s.path
    if damage == "missing":
        img.unlink()
    elif damage == "truncated":
        img.write_bytes(img.read_bytes()[: len(img.read_bytes()) // 2])
    elif damage == "not_an_image":
        img.write_text("hello")
    else:
        _edit(w, s.line or 0, 1, "5000", "Manually_Annotated_file_lists/validation.csv")
    with pytest.raises(DataFormatError) as err:
        _dm(w.root, tmp_path).setup()
    msg = str(err.value)
    assert str(img) in msg and "validation.csv:" in msg and "\n" not in msg
    dm = _dm(w.root, tmp_path, on_bad_sample="skip")
    dm.setup()
    assert dm.skipped == 1 and len(dm.splits["test"]) == len(w.split("test")) - 1
    _colors = _by_color(dm, "test")
    rest = [t for t in w.split("test") if t is not s]
    assert all(_close(c, t.color) for c, t in zip(_colors, rest, strict=True))


def test_missing_layout(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="does not exist; expected the official AffectNet"):
        _dm(tmp_path / "none", tmp_path).setup()
    w = write_affectnet(tmp_path / "an", n=16, n_test=8)
    (w.root / "Manually_Annotated_file_lists/validation.csv").unlink()
    with pytest.raises(DataFormatError) as err:
        _dm(w.root, tmp_path).setup()
    assert "validation.csv: not found" in str(err.value)
    assert "subDirectory_filePath,face_x" in str(err.value)


def test_va_is_valid_only_when_both_values_are(tmp_path: Path) -> None:
    """-2 on one of the two values makes the pair invalid: masked out of VA loss and metrics."""
    w = write_affectnet(tmp_path / "an", n=16, n_test=8, with_invalid_va=False, with_dropped=False)
    test = w.split("test")
    lst = "Manually_Annotated_file_lists/validation.csv"
    pairs = {0: ("0.5", "-2"), 1: ("-2", "-0.25"), 2: ("-2", "-2"), 3: ("-1", "1")}
    for i, (v, a) in pairs.items():
        _edit(w, test[i].line, 7, v, lst)
        _edit(w, test[i].line, 8, a, lst)
    dm = _dm(w.root, tmp_path)
    dm.setup()
    got = dm.splits["test"]
    assert got.va_mask[:4].tolist() == [False, False, False, True]
    assert got.va_mask[4:].all()
    # an invalid pair keeps no half of it; the valid edge values stay
    assert got.valence[:3].tolist() == [0.0, 0.0, 0.0]
    assert got.arousal[:3].tolist() == [0.0, 0.0, 0.0]
    assert (float(got.valence[3]), float(got.arousal[3])) == (-1.0, 1.0)
    batch = next(iter(dm.test_dataloader()))
    assert batch["va_mask"][:4].tolist() == [False, False, False, True]


def test_a_new_crop_margin_never_reuses_the_old_crops(tmp_path: Path) -> None:
    w = write_affectnet(tmp_path / "an", n=16, n_test=8, with_dropped=False)
    _replace_image(w, 0, (200, 200), (70, 70, 60, 60))
    tight = _dm(w.root, tmp_path, crop_margin=0.0)
    tight.setup()
    wide = _dm(w.root, tmp_path, crop_margin=0.5)  # same cache_dir
    wide.setup()
    assert wide.cache_path != tight.cache_path
    corner_tight = tight.splits["test"].images[0][1, 1].astype(int)
    corner_wide = wide.splits["test"].images[0][1, 1].astype(int)
    assert np.abs(corner_wide - 90).max() <= 6  # the grey background around the face
    assert np.abs(corner_tight - 90).max() > 30  # the face colour fills the tight crop
