"""The decode-once cache: reuse, invalidation, atomicity under crashes, corruption."""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path

import numpy as np
import pytest

from fersuite.data.cache import MANIFEST, ArrayCache
from fersuite.data.fer2013 import FER2013DataModule
from tests._helpers.fork import fork
from tests.data.fixtures import write_fer2013, write_ferplus


def _dm(root: Path, cache: Path | None, **kw: object) -> FER2013DataModule:
    return FER2013DataModule(
        root=str(root), cache_dir=None if cache is None else str(cache), num_workers=0, **kw
    )  # type: ignore[arg-type]


def _cache_dirs(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / "fer2013").iterdir() if not p.name.startswith("."))


def _assert_matches(dm: FER2013DataModule, written: object) -> None:
    for split in ("train", "val", "test"):
        expected = written.split(split)  # type: ignore[attr-defined]
        np.testing.assert_array_equal(
            dm.splits[split].images, np.stack([s.pixels for s in expected])
        )
        assert [dm.class_names[int(v)] for v in dm.splits[split].expression] == [
            s.name for s in expected
        ]


def test_second_open_reuses_the_memory_mapped_cache(tmp_path: Path) -> None:
    w = write_fer2013(tmp_path / "fer", n_per_split=6)
    cache = tmp_path / "cache"
    dm = _dm(w.root, cache)
    dm.setup()
    (d,) = _cache_dirs(cache)
    assert dm.cache_path == d
    stamps = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}
    dm2 = _dm(w.root, cache)
    dm2.setup()
    assert {p.name: p.stat().st_mtime_ns for p in d.iterdir()} == stamps
    assert isinstance(dm2.splits["train"].images, np.memmap)
    _assert_matches(dm2, w)
    manifest = json.loads((d / MANIFEST).read_text())
    assert manifest["meta"]["skipped"] == 0
    assert {a["path"] for a in manifest["sources"]} == {str((w.root / "fer2013.csv").resolve())}


def test_changed_source_rebuilds_and_removes_the_superseded_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    w1 = write_fer2013(tmp_path / "fer", n_per_split=6, seed=1)
    _dm(w1.root, cache).setup()
    (old,) = _cache_dirs(cache)
    w2 = write_fer2013(tmp_path / "fer", n_per_split=6, seed=2)  # same path, new content
    dm = _dm(w2.root, cache)
    dm.setup()
    (new,) = _cache_dirs(cache)
    assert new != old and not old.exists()
    _assert_matches(dm, w2)


def test_other_parameters_get_their_own_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    fer = write_fer2013(tmp_path / "fer", n_per_split=8)
    plus = write_ferplus(tmp_path / "fer", fer)
    _dm(fer.root, cache).setup()
    for mode in ("majority", "soft"):
        _dm(fer.root, cache, ferplus_labels=str(plus.files[0]), ferplus_mode=mode).setup()
    _dm(fer.root, cache, on_bad_sample="skip").setup()
    assert len(_cache_dirs(cache)) == 4


#: Where the forked writer dies: in the middle of the arrays (``save``), or with its complete
#: temporary directory never renamed into place (``rename``).
CRASH_POINTS = ("save", "rename")


def _build_then_crash(root: Path, cache: Path, point: str) -> None:
    """In a forked process: build the cache and die (``os._exit(3)``, no clean-up) at
    ``point``; never returns."""
    code = 1
    try:
        from fersuite.data import cache as c

        if point == "rename":  # complete temporary directory, never renamed into place
            c.os.rename = lambda a, b: os._exit(3)  # type: ignore[assignment]
        elif point == "save":  # in the middle of the arrays
            real = c.np.save
            calls = []

            def save(fh, arr, **kw):  # type: ignore[no-untyped-def]
                calls.append(1)
                if len(calls) == 2:
                    fh.write(b"partial")
                    fh.flush()
                    os._exit(3)
                real(fh, arr, **kw)

            c.np.save = save  # type: ignore[assignment]
        FER2013DataModule(root=str(root), cache_dir=str(cache), num_workers=0).setup()
        code = 0
    finally:
        os._exit(code)


def _crash_in_children(root: Path, caches: dict[str, Path]) -> dict[str, int]:
    """For each crash point, build the cache ``caches[point]`` in a process of its own killed
    mid-write at that point (without a fresh interpreter's start-up); each one's exit status.

    The test process forks once (``fork()`` first collects its garbage: seconds in a worker
    that has run many tests); that child, whose objects are frozen, forks one writer per
    point (cheaply) and passes their exit statuses back through a pipe."""
    read, write = os.pipe()
    pid = fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(read)
            gc.disable()  # no collection of the test process's objects here
            statuses = {}
            for point, cache in caches.items():
                writer = fork()
                if writer == 0:
                    _build_then_crash(root, cache, point)
                gc.freeze()  # what fork() unfroze: the next fork() collects only what is new
                _, raw = os.waitpid(writer, 0)
                statuses[point] = os.waitstatus_to_exitcode(raw)
            os.write(write, json.dumps(statuses).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        answer = fh.read()
    _, raw = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(raw) == 0, answer
    return json.loads(answer)


@pytest.mark.subprocess
def test_a_crash_mid_write_never_leaves_a_valid_looking_cache(tmp_path: Path) -> None:
    w = write_fer2013(tmp_path / "fer", n_per_split=6)
    caches = {point: tmp_path / f"cache-{point}" for point in CRASH_POINTS}
    assert _crash_in_children(w.root, caches) == dict.fromkeys(CRASH_POINTS, 3)
    for point, cache in caches.items():
        leftovers = list((cache / "fer2013").glob(".tmp-*"))
        assert len(leftovers) == 1 and not _cache_dirs(cache), point
        dm = _dm(w.root, cache)
        dm.setup()
        _assert_matches(dm, w)
        assert len(_cache_dirs(cache)) == 1, point
        assert not list((cache / "fer2013").glob(".tmp-*")), point  # the dead process's leftovers


def test_an_exception_mid_write_leaves_nothing(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    w = write_fer2013(tmp_path / "fer", n_per_split=6)
    cache = tmp_path / "cache"

    def boom(self, writer, bad):  # type: ignore[no-untyped-def]
        writer.save("train.images", np.zeros((2, 48, 48), np.uint8))
        raise KeyboardInterrupt

    monkeypatch.setattr(FER2013DataModule, "fill", boom)
    with pytest.raises(KeyboardInterrupt):
        _dm(w.root, cache).setup()
    assert list((cache / "fer2013").iterdir()) == []


@pytest.mark.parametrize("damage", ["truncate", "no_manifest", "garbage_manifest", "wrong_key"])
def test_damaged_cache_is_rebuilt(tmp_path: Path, damage: str) -> None:
    w = write_fer2013(tmp_path / "fer", n_per_split=6)
    cache = tmp_path / "cache"
    _dm(w.root, cache).setup()
    (d,) = _cache_dirs(cache)
    if damage == "truncate":
        f = d / "train.images.npy"
        f.write_bytes(f.read_bytes()[:-100])
    elif damage == "no_manifest":
        (d / MANIFEST).unlink()
    elif damage == "garbage_manifest":
        (d / MANIFEST).write_text("{not json")
    else:
        m = json.loads((d / MANIFEST).read_text())
        m["key"] = "0" * 20
        (d / MANIFEST).write_text(json.dumps(m))
    dm = _dm(w.root, cache)
    dm.setup()
    _assert_matches(dm, w)
    assert json.loads((d / MANIFEST).read_text())["key"] == d.name


def test_rebuild_flag_and_in_memory_mode(tmp_path: Path) -> None:
    w = write_fer2013(tmp_path / "fer", n_per_split=6)
    cache = tmp_path / "cache"
    _dm(w.root, cache).setup()
    (d,) = _cache_dirs(cache)
    before = (d / MANIFEST).stat().st_mtime_ns
    _dm(w.root, cache, rebuild_cache=True).setup()
    assert (d / MANIFEST).stat().st_mtime_ns != before
    mem = _dm(w.root, None)
    mem.setup()
    assert mem.cache_path is None and not isinstance(mem.splits["train"].images, np.memmap)
    _assert_matches(mem, w)


def test_keys_depend_on_sources_and_params(tmp_path: Path) -> None:
    src = [{"path": "/a", "size": 1, "mtime_ns": 2}]
    a = ArrayCache(tmp_path, "x", src, {"size": 48})
    assert a.key == ArrayCache(tmp_path, "x", src, {"size": 48}).key
    assert a.key != ArrayCache(tmp_path, "x", src, {"size": 64}).key
    changed = [{"path": "/a", "size": 1, "mtime_ns": 3}]
    b = ArrayCache(tmp_path, "x", changed, {"size": 48})
    assert a.key != b.key and a.slot == b.slot
