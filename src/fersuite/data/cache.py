"""The decode-once dataset cache: memory-mapped ``.npy`` arrays plus a manifest written last.

A cache lives in ``<cache_dir>/<dataset>/<key>/``. The key hashes the source files' identity
(resolved path, size and mtime_ns, or with :func:`content_identity` a sha256 of the bytes)
and the preprocessing parameters, so a changed source file or setting selects a new
directory. A cache is built in a temporary sibling directory; its ``manifest.json`` (the
shape, dtype and byte size of every array) is written last and the directory is renamed into
place only when complete. Opening checks the manifest against the files, so a crash at any
point never leaves a cache that is later read as valid: a leftover temporary directory is
ignored (and removed once its process is gone) and the cache is rebuilt. When a source file
changes, the superseded cache of the same sources and parameters is deleted after the new
one is in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fersuite.data.base import ArraySplit
from fersuite.utils.io import json_default, pid_alive

log = logging.getLogger(__name__)

#: Bump when the on-disk layout or any decoder changes, so old caches are not reused.
CACHE_FORMAT = 1
MANIFEST = "manifest.json"
_FIELDS = ("images", "expression", "valence", "arousal", "va_mask")


def file_identity(path: Path) -> dict[str, Any]:
    """What identifies one source file: resolved path, size and modification time."""
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def content_identity(path: Path) -> dict[str, Any]:
    """What identifies one source file by content: its size and the sha256 of its bytes.

    No timestamps: a rewrite that keeps the size and restores the mtime still changes the
    key, and a touched but unchanged file keeps it. A file that cannot be read (missing,
    denied, not a regular file) is identified by why, so its loader reports it as it decodes.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)  # O_NONBLOCK: a FIFO must not block the key
    except OSError as exc:
        return {"unreadable": type(exc).__name__}
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return {"unreadable": "not a regular file"}
        h = hashlib.sha256()
        while chunk := os.read(fd, 1 << 16):  # small reads: most images fit in one
            h.update(chunk)
    except OSError as exc:
        return {"unreadable": type(exc).__name__}
    finally:
        os.close(fd)
    return {"size": st.st_size, "sha256": h.hexdigest()}


def _digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass
class CachedData:
    """The splits (images memory-mapped when cached on disk) and the dataset's metadata."""

    splits: dict[str, ArraySplit]
    meta: dict[str, Any]
    path: Path | None = None
    built: bool = False


class CacheWriter:
    """Fills a temporary cache directory: arrays are written as ``<name>.npy``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._memmaps: dict[str, np.memmap] = {}

    def _path(self, name: str) -> Path:
        if "/" in name or name.startswith("."):
            raise ValueError(f"bad cache array name {name!r}")
        return self.directory / f"{name}.npy"

    def empty(self, name: str, shape: tuple[int, ...], dtype: Any = np.uint8) -> np.ndarray:
        """A zero-filled array backed by the cache file, to be filled in place (for images
        that do not fit in memory)."""
        arr = np.lib.format.open_memmap(self._path(name), mode="w+", dtype=dtype, shape=shape)
        self._memmaps[name] = arr
        return arr

    def shrink(self, name: str, keep: np.ndarray) -> np.ndarray:
        """Keep only the rows ``keep`` (bool mask or indices) of an array made by :meth:`empty`."""
        arr = self._memmaps.pop(name)
        rows = np.flatnonzero(keep) if keep.dtype == bool else keep
        tmp_name = f"{name}.compact"
        out = np.lib.format.open_memmap(
            self._path(tmp_name), mode="w+", dtype=arr.dtype, shape=(len(rows), *arr.shape[1:])
        )
        for start in range(0, len(rows), 4096):
            sel = rows[start : start + 4096]
            out[start : start + len(sel)] = arr[sel]
        out.flush()
        del arr, out
        os.replace(self._path(tmp_name), self._path(name))
        arr = np.load(self._path(name), mmap_mode="r+")
        self._memmaps[name] = arr
        return arr

    def save(self, name: str, array: np.ndarray) -> None:
        with open(self._path(name), "wb") as fh:
            np.save(fh, np.ascontiguousarray(array), allow_pickle=False)

    def save_split(self, split: str, data: ArraySplit) -> None:
        for field in _FIELDS:
            value = getattr(data, field)
            if value is None:
                continue
            name = f"{split}.{field}"
            if name in self._memmaps:
                if self._memmaps[name] is not value:
                    self._memmaps[name][...] = value
                continue
            self.save(name, value)

    def finish(self) -> dict[str, dict[str, Any]]:
        """Flush and fsync every array; return the manifest's description of them."""
        for arr in self._memmaps.values():
            arr.flush()
        self._memmaps.clear()
        arrays: dict[str, dict[str, Any]] = {}
        for path in sorted(self.directory.glob("*.npy")):
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
            arr = np.load(path, mmap_mode="r")
            arrays[path.name[: -len(".npy")]] = {
                "shape": list(arr.shape),
                "dtype": arr.dtype.str,
                "bytes": path.stat().st_size,
            }
            del arr
        return arrays


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class ArrayCache:
    """One cache slot: ``dataset`` + ``sources`` (file identities) + ``params``."""

    def __init__(
        self,
        cache_dir: str | os.PathLike[str] | None,
        dataset: str,
        sources: Sequence[Mapping[str, Any]],
        params: Mapping[str, Any],
    ) -> None:
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.dataset = dataset
        self.sources = [dict(s) for s in sources]
        self.params = dict(params)
        self.key = _digest(
            {"format": CACHE_FORMAT, "dataset": dataset, "sources": self.sources, "params": params}
        )
        # Same files and parameters, any content: caches of older versions of the sources.
        self.slot = _digest(
            {
                "dataset": dataset,
                "sources": [s.get("path") for s in self.sources],
                "params": params,
            }
        )

    @property
    def directory(self) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / self.dataset / self.key

    # -- reading ------------------------------------------------------------------------------
    def load(self) -> CachedData | None:
        """The cached data, or None when absent or not valid (the reason is logged)."""
        d = self.directory
        if d is None or not d.is_dir():
            return None
        try:
            return self._load(d)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("dataset cache %s is not valid (%s); rebuilding it", d, exc)
            return None

    def _load(self, d: Path) -> CachedData:
        manifest = json.loads((d / MANIFEST).read_text())
        if manifest.get("format") != CACHE_FORMAT or manifest.get("key") != self.key:
            raise ValueError("manifest does not match this cache key")
        arrays: dict[str, np.ndarray] = {}
        for name, spec in manifest["arrays"].items():
            path = d / f"{name}.npy"
            if path.stat().st_size != spec["bytes"]:
                raise ValueError(
                    f"{path.name} has {path.stat().st_size} bytes, expected {spec['bytes']}"
                )
            big = name.endswith(".images")
            arr = np.load(path, mmap_mode="c" if big else None, allow_pickle=False)
            if list(arr.shape) != spec["shape"] or arr.dtype.str != spec["dtype"]:
                raise ValueError(f"{path.name} has shape {arr.shape} {arr.dtype}, expected {spec}")
            arrays[name] = arr
        splits: dict[str, ArraySplit] = {}
        for split in manifest["splits"]:
            fields = {f: arrays.get(f"{split}.{f}") for f in _FIELDS}
            if fields["images"] is None or fields["expression"] is None:
                raise ValueError(f"split {split} lacks images or labels")
            splits[split] = ArraySplit(**fields)  # type: ignore[arg-type]
        return CachedData(splits=splits, meta=dict(manifest["meta"]), path=d)

    # -- writing ------------------------------------------------------------------------------
    def build(
        self, fill: Callable[[CacheWriter], tuple[dict[str, ArraySplit], dict[str, Any]]]
    ) -> CachedData:
        """Run ``fill`` into a temporary directory, commit it atomically, open the result.

        ``fill(writer)`` returns the splits and the metadata; arrays it created with
        ``writer.empty`` are kept as they are, the others are saved now.
        """
        if self.cache_dir is None:
            with tempfile.TemporaryDirectory(prefix="fersuite-data-") as tmp:
                writer = CacheWriter(Path(tmp))
                splits, meta = fill(writer)
                for split, data in splits.items():
                    writer.save_split(split, data)
                writer.finish()
                in_memory = {
                    s: ArraySplit(
                        *(
                            None if getattr(v, f) is None else np.array(getattr(v, f))
                            for f in _FIELDS
                        )
                    )
                    for s, v in splits.items()
                }
            return CachedData(splits=in_memory, meta=meta, built=True)
        final = self.directory
        assert final is not None
        parent = final.parent
        parent.mkdir(parents=True, exist_ok=True)
        self._remove_stale_temporaries(parent)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{self.key}-{os.getpid()}-", dir=parent))
        try:
            writer = CacheWriter(tmp)
            splits, meta = fill(writer)
            for split, data in splits.items():
                writer.save_split(split, data)
            del splits
            manifest = {
                "format": CACHE_FORMAT,
                "key": self.key,
                "slot": self.slot,
                "dataset": self.dataset,
                "sources": self.sources,
                "params": self.params,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "arrays": writer.finish(),
                "splits": sorted({p.name.split(".")[0] for p in tmp.glob("*.npy")}),
                "meta": meta,
            }
            text = json.dumps(manifest, indent=2, sort_keys=True, default=json_default)
            with open(tmp / MANIFEST, "w") as fh:
                fh.write(text + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            _fsync_dir(tmp)
            self._commit(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        data = self.load()
        if data is None:
            raise OSError(f"dataset cache {final} could not be read back after writing it")
        data.built = True
        self._remove_superseded(parent)
        return data

    def _commit(self, tmp: Path, final: Path) -> None:
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process committed first, or an invalid cache is in the way.
            if self.load() is not None:
                return
            shutil.rmtree(final, ignore_errors=True)
            os.rename(tmp, final)
        _fsync_dir(final.parent)

    def _remove_stale_temporaries(self, parent: Path) -> None:
        for p in parent.glob(f".tmp-{self.key}-*"):
            try:
                pid = int(p.name.split("-")[2])
            except (IndexError, ValueError):
                continue
            if not pid_alive(pid):
                log.info("removing an unfinished dataset cache %s", p)
                shutil.rmtree(p, ignore_errors=True)

    def _remove_superseded(self, parent: Path) -> None:
        for manifest in parent.glob(f"*/{MANIFEST}"):
            d = manifest.parent
            if d.name == self.key:
                continue
            try:
                other = json.loads(manifest.read_text())
            except (OSError, ValueError):
                continue
            if other.get("slot") == self.slot:
                log.info("removing superseded dataset cache %s", d)
                shutil.rmtree(d, ignore_errors=True)

    def load_or_build(
        self,
        fill: Callable[[CacheWriter], tuple[dict[str, ArraySplit], dict[str, Any]]],
        rebuild: bool = False,
    ) -> CachedData:
        if not rebuild:
            data = self.load()
            if data is not None:
                return data
        elif self.directory is not None and self.directory.exists():
            shutil.rmtree(self.directory, ignore_errors=True)
        return self.build(fill)
