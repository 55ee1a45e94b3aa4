"""The folder dataset's cache is keyed by the images' content, not their size or mtime."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fersuite.data import folder
from fersuite.data.folder import FolderDataModule
from tests.data.fixtures import write_folder

RED, BLUE = (220, 30, 30), (30, 30, 220)


def _dm(root: Path, cache: Path, **kw: object) -> FolderDataModule:
    args: dict[str, object] = {
        "root": str(root),
        "cache_dir": str(cache),
        "num_workers": 0,
        "batch_size": 4,
        "in_chans": 3,
        "image_size": 16,
        "val_fraction": 0.25,
        "decode_workers": 1,
    }
    return FolderDataModule(**{**args, **kw})  # type: ignore[arg-type]


def _solid(path: Path, color: tuple[int, int, int]) -> None:
    """A BMP: its byte size depends only on its dimensions, never on its pixels."""
    Image.new("RGB", (24, 24), color).save(path, format="BMP")


def _row(dm: FolderDataModule, rel: str) -> np.ndarray:
    rels = [it.rel for it in dm.list_images()["test"]]  # the test split keeps listing order
    return dm.splits["test"].images[rels.index(rel)]


def _count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = folder.decode_face

    def counting(crop, path, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(str(path))
        return real(crop, path, *args, **kwargs)

    monkeypatch.setattr(folder, "decode_face", counting)
    return calls


def test_a_same_size_rewrite_with_the_old_mtime_restored_is_not_served_stale(
    tmp_path: Path,
) -> None:
    w = write_folder(tmp_path / "f", counts={"train": 8, "test": 4}, with_va=False)
    rel = "test/happiness/edited.bmp"
    target = w.root / rel
    _solid(target, RED)
    before = target.stat()
    cache = tmp_path / "cache"
    dm = _dm(w.root, cache)
    dm.setup()
    assert np.abs(_row(dm, rel).reshape(-1, 3).mean(0) - RED).max() <= 2

    _solid(target, BLUE)  # in place: same inode, same size
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = target.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    dm2 = _dm(w.root, cache)
    dm2.setup()
    assert np.abs(_row(dm2, rel).reshape(-1, 3).mean(0) - BLUE).max() <= 2
    assert dm2.cache_path != dm.cache_path
    # the cache of the old content is superseded
    assert [p for p in (cache / "folder").iterdir() if not p.name.startswith(".")] == [
        dm2.cache_path
    ]


def test_an_unchanged_or_only_touched_folder_reuses_its_cache_without_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = write_folder(tmp_path / "f", counts={"train": 8, "test": 4}, with_va=True)
    cache = tmp_path / "cache"
    calls = _count_decodes(monkeypatch)
    dm = _dm(w.root, cache, va_csv="va.csv")
    dm.setup()
    assert len(calls) == 12
    calls.clear()
    again = _dm(w.root, cache, va_csv="va.csv")
    again.setup()
    assert calls == [] and again.cache_path == dm.cache_path
    assert isinstance(again.splits["train"].images, np.memmap)
    np.testing.assert_array_equal(again.splits["test"].images, dm.splits["test"].images)
    # a new mtime with the same bytes (a copy without -p, a touch) is the same content
    for path in w.files:
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**10))
    touched = _dm(w.root, cache, va_csv="va.csv")
    touched.setup()
    assert calls == [] and touched.cache_path == dm.cache_path


def test_an_edited_va_csv_of_the_same_size_and_mtime_rebuilds(tmp_path: Path) -> None:
    w = write_folder(tmp_path / "f", counts={"train": 8, "test": 4}, with_va=True)
    csv = w.root / "va.csv"
    before = csv.stat()
    cache = tmp_path / "cache"
    dm = _dm(w.root, cache, va_csv="va.csv")
    dm.setup()
    lines = csv.read_text().splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("test/"))
    path, valence, arousal = lines[i].split(",")
    assert valence != arousal
    lines[i] = f"{path},{arousal},{valence}"  # swapped: the same size
    csv.write_text("\n".join(lines) + "\n")
    os.utime(csv, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert csv.stat().st_size == before.st_size
    dm2 = _dm(w.root, cache, va_csv="va.csv")
    dm2.setup()
    assert dm2.cache_path != dm.cache_path
    j = [it.rel for it in dm2.list_images()["test"]].index(path)
    assert dm2.splits["test"].valence[j] == pytest.approx(float(arousal), abs=1e-6)
    assert dm2.splits["test"].arousal[j] == pytest.approx(float(valence), abs=1e-6)


def test_an_image_that_cannot_be_read_is_a_bad_sample_not_a_crash(tmp_path: Path) -> None:
    w = write_folder(tmp_path / "f", counts={"train": 8, "test": 4}, with_va=False)
    (w.root / "test" / "sad" / "gone.png").symlink_to(tmp_path / "missing.png")
    dm = _dm(w.root, tmp_path / "cache", on_bad_sample="skip")
    dm.setup()
    assert dm.skipped == 1 and len(dm.splits["test"]) == 4


def test_content_identity_of_odd_files(tmp_path: Path) -> None:
    from fersuite.data.cache import content_identity

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"same bytes")
    b.write_bytes(b"same bytes")
    want = {"size": 10, "sha256": hashlib.sha256(b"same bytes").hexdigest()}
    assert content_identity(a) == content_identity(b) == want
    assert content_identity(tmp_path / "missing.png") == {"unreadable": "FileNotFoundError"}
    assert content_identity(tmp_path) == {"unreadable": "not a regular file"}
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    got: list[dict] = []
    t = threading.Thread(target=lambda: got.append(content_identity(fifo)), daemon=True)
    t.start()
    t.join(5.0)
    assert got == [{"unreadable": "not a regular file"}]  # did not block on the pipe
