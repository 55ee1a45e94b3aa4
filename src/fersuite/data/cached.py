"""Base DataModule of the datasets read from their public on-disk format and decoded once.

A subclass names its source files, its preprocessing parameters and how to fill the cache;
this class handles the cache (see :mod:`fersuite.data.cache`), the ``on_bad_sample`` policy,
the seeded stratified validation slice and the threaded image decoding.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from fersuite.data.base import AffectDataModule, ArraySplit
from fersuite.data.cache import ArrayCache, CacheWriter, file_identity
from fersuite.data.errors import BadSamples, check_on_bad_sample
from fersuite.data.images import color_mode
from fersuite.errors import DataFormatError, ImageReadError
from fersuite.utils.progress import progress

log = logging.getLogger(__name__)

J = TypeVar("J")


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-class split of ``range(len(labels))`` into (rest, held-out) index arrays.

    Each class gives ``round(fraction * n_c)`` samples (at least one when it has two or more)
    to the held-out part; both parts keep the original order.
    """
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = min(max(round(fraction * len(idx)), 1), len(idx) - 1) if len(idx) >= 2 else 0
        held.append(rng.permutation(idx)[:k])
    out = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    mask = np.zeros(len(labels), dtype=bool)
    mask[out] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def dir_identity(path: Path) -> dict[str, Any]:
    """Identity of an image directory tree whose files are too many to stat on every open."""
    st = path.stat()
    return {"path": str(path.resolve()), "dir_mtime_ns": st.st_mtime_ns}


class CachedDataModule(AffectDataModule):
    """Shared options of every on-disk dataset.

    Args:
        root: the dataset directory (layout per subclass).
        cache_dir: where decoded caches go (None: decode into memory on every run).
        on_bad_sample: ``error`` (stop at the first malformed row or unreadable image, naming
            it) or ``skip`` (skip and count it; the count is reported as ``skipped``).
        val_fraction: share of each class of the training data held out as the validation
            split, for datasets without an official validation split.
        split_seed: seed of that stratified slice.
        cache_size: side of the cached square face images (image datasets); None: the model
            input size (``image_size``).
        decode_workers: threads decoding images while the cache is built (None: up to 4).
        rebuild_cache: ignore and replace an existing cache.
    """

    #: Directory name of the dataset's caches.
    dataset_name: ClassVar[str] = ""
    #: The expected on-disk layout, quoted in errors about a missing root or file.
    layout: ClassVar[str] = ""

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        on_bad_sample: str = "error",
        val_fraction: float = 0.1,
        split_seed: int = 0,
        cache_size: int | None = None,
        decode_workers: int | None = None,
        rebuild_cache: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if root is None or not str(root).strip():
            raise DataFormatError(f"data.root is not set; expected {self.layout}")
        self.root = Path(root).expanduser()
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.on_bad_sample = check_on_bad_sample(on_bad_sample)
        if not 0.0 < float(val_fraction) < 1.0:
            raise DataFormatError(f"data.val_fraction={val_fraction}; expected 0 < value < 1")
        self.val_fraction = float(val_fraction)
        self.split_seed = int(split_seed)
        size = self.image_size if cache_size is None else int(cache_size)
        if size < 8:
            raise DataFormatError(f"data.cache_size={cache_size}; expected >= 8 (or null)")
        self.cache_size = size
        workers = min(4, os.cpu_count() or 1) if decode_workers is None else int(decode_workers)
        if workers < 1:
            raise DataFormatError(f"data.decode_workers={decode_workers}; expected >= 1")
        self.decode_workers = workers
        self.rebuild_cache = bool(rebuild_cache)
        self.color = color_mode(self.in_chans)
        #: Metadata of the loaded data (``skipped``, ``dropped``, ...), set by :meth:`setup`.
        self.info: dict[str, Any] = {}
        self.cache_path: Path | None = None

    # -- to implement -------------------------------------------------------------------------
    def source_identities(self) -> list[dict[str, Any]]:  # pragma: no cover - abstract
        """Identities of the source files (checked to exist, with a one-line error)."""
        raise NotImplementedError

    def cache_params(self) -> dict[str, Any]:  # pragma: no cover - abstract
        """Every setting that changes the cached arrays."""
        raise NotImplementedError

    def fill(
        self, writer: CacheWriter, bad: BadSamples
    ) -> tuple[dict[str, ArraySplit], dict[str, Any]]:  # pragma: no cover - abstract
        """Read the sources and return the splits and metadata (``dropped`` counts, ...)."""
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------
    @property
    def skipped(self) -> int:
        return int(self.info.get("skipped", 0))

    def _identities(self, paths: Sequence[Path]) -> list[dict[str, Any]]:
        return [file_identity(p) for p in paths]

    def array_cache(self) -> ArrayCache:
        """The cache slot of the current sources and settings (``key`` names its directory):
        every setting that changes the arrays is part of the key."""
        params = {
            **self.cache_params(),
            "on_bad_sample": self.on_bad_sample,
            "class_names": list(self.class_names),
        }
        return ArrayCache(self.cache_dir, self.dataset_name, self.source_identities(), params)

    def load_splits(self) -> dict[str, ArraySplit]:
        cache = self.array_cache()
        start = time.perf_counter()
        data = cache.load_or_build(self._fill, rebuild=self.rebuild_cache)
        self.info = data.meta
        self.cache_path = data.path
        verb = "built" if data.built else "opened"
        sizes = ", ".join(f"{k} {len(v)}" for k, v in data.splits.items())
        log.info(
            "%s: %s dataset cache %s in %.2fs (%s; skipped %d)",
            self.dataset_name,
            verb,
            data.path or "(in memory)",
            time.perf_counter() - start,
            sizes,
            self.skipped,
        )
        return data.splits

    def _fill(self, writer: CacheWriter) -> tuple[dict[str, ArraySplit], dict[str, Any]]:
        bad = BadSamples(self.on_bad_sample)
        splits, meta = self.fill(writer, bad)
        for name in ("train", "val", "test"):
            if name not in splits or len(splits[name]) == 0:
                raise DataFormatError(
                    f"{self.root}: no usable samples for the {name} split "
                    f"(skipped {bad.count}); expected {self.layout}"
                )
        meta = {**meta, "skipped": bad.count, "skip_reasons": dict(bad.reasons)}
        return splits, meta

    def image_shape(self) -> tuple[int, ...]:
        s = self.cache_size
        return (s, s) if self.color == "L" else (s, s, 3)

    def decode_all(
        self,
        out: np.ndarray,
        jobs: Sequence[J],
        decode: Callable[[J], np.ndarray],
        where: Callable[[J], str],
        bad: BadSamples,
    ) -> np.ndarray:
        """Decode ``jobs`` into ``out`` (one row each) with a thread pool; returns the mask of
        rows that were decoded (unreadable images go to ``bad`` under their ``where``)."""
        ok = np.ones(len(jobs), dtype=bool)
        if not jobs:
            return ok
        last = start = time.perf_counter()

        def run(job: J) -> np.ndarray | str:
            try:
                return decode(job)
            except ImageReadError as exc:
                return str(exc)

        chunk = 256
        with (
            ThreadPoolExecutor(self.decode_workers, thread_name_prefix="decode") as pool,
            progress(f"{self.dataset_name}: decoding images", len(jobs)) as advance,
        ):
            for begin in range(0, len(jobs), chunk):
                part = jobs[begin : begin + chunk]
                for i, result in enumerate(pool.map(run, part), start=begin):
                    if isinstance(result, str):
                        ok[i] = False
                        bad(where(jobs[i]), result, "unreadable image")
                    else:
                        out[i] = result
                advance(len(part))
                now = time.perf_counter()
                if now - last > 10.0:
                    last = now
                    done = begin + len(part)
                    log.info(
                        "%s: decoded %d/%d images (%.0f/s)",
                        self.dataset_name,
                        done,
                        len(jobs),
                        done / (now - start),
                    )
        return ok
