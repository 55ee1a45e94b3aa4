"""Teacher outputs computed once per (teacher weights, dataset split, input specs), on disk.

With ``distill.teacher_outputs=cached`` the teacher runs once over a split with the
*evaluation* transform (no augmentation) and its logits / valence / arousal are stored
under ``<paths.cache_dir>/distill/``. The file name is a digest of:

* the sha256 of the teacher's weights file,
* the dataset split's fingerprint (the datamodule's own source cache key when it has one,
  otherwise a sha256 of the split's images; always the split length and labels),
* the data spec (size, channels, mean/std of the batches) and the teacher's input spec,
* :data:`CACHE_VERSION`.

Any change gives another file, so a stale cache is never read. Files are written atomically
and checked on reading (the stored key, row count, class count, finite values); an
unreadable or mismatching file is recomputed. Batches carry ``index`` (the dataset row), so
training looks teacher outputs up by row whatever the sampler or augmentation.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from fersuite.data.base import ArrayAffectDataset, ArraySplit
from fersuite.distill.adapt import adapt_images
from fersuite.distill.teacher import FrozenTeacher
from fersuite.errors import ConfigError
from fersuite.types import AffectOutput, InputSpec
from fersuite.utils.io import atomic_path
from fersuite.utils.progress import progress

__all__ = [
    "CACHE_VERSION",
    "TeacherOutputCache",
    "TeacherOutputs",
    "dataset_fingerprint",
    "eval_dataset",
    "run_teacher",
]

log = logging.getLogger(__name__)

#: Bump when what is cached (or how it is computed) changes.
CACHE_VERSION = 1

_HASH_ROWS = 4096


@dataclass
class TeacherOutputs:
    """Teacher predictions for every row of a split: (N, C) logits, (N,) valence/arousal."""

    expression: torch.Tensor
    valence: torch.Tensor
    arousal: torch.Tensor

    def __post_init__(self) -> None:
        n = self.expression.shape[0]
        if self.expression.ndim != 2 or self.valence.shape != (n,) or self.arousal.shape != (n,):
            raise ValueError(
                "teacher outputs need (N, C) logits and (N,) valence/arousal, got "
                f"{tuple(self.expression.shape)}, {tuple(self.valence.shape)}, "
                f"{tuple(self.arousal.shape)}"
            )

    def __len__(self) -> int:
        return int(self.expression.shape[0])

    @property
    def device(self) -> torch.device:
        return self.expression.device

    def to(self, device: torch.device | str) -> TeacherOutputs:
        return TeacherOutputs(
            self.expression.to(device), self.valence.to(device), self.arousal.to(device)
        )

    def lookup(self, index: torch.Tensor) -> AffectOutput:
        """Outputs for dataset rows ``index`` (a batch's ``index`` entry)."""
        index = index.to(self.device, torch.long)
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= len(self)):
            raise IndexError(
                f"batch index {int(index.max())} outside the cached split of {len(self)} rows; "
                "the teacher-output cache does not belong to this dataset"
            )
        return AffectOutput(self.expression[index], self.valence[index], self.arousal[index])


def _update_array(h: Any, arr: np.ndarray | None, name: str) -> None:
    if arr is None:
        h.update(f"{name}:none;".encode())
        return
    h.update(f"{name}:{arr.dtype.str}:{tuple(arr.shape)};".encode())
    for start in range(0, len(arr), _HASH_ROWS):
        h.update(np.ascontiguousarray(arr[start : start + _HASH_ROWS]).tobytes())


def _source_key(datamodule: Any, split: str) -> str | None:
    """The datamodule's own identity of its data, when it has one."""
    key_fn = getattr(datamodule, "cache_key", None)  # e.g. the synthetic generator's key
    if callable(key_fn):
        try:
            key = key_fn(split)
        except TypeError:
            key = None
        if key:
            return f"cache_key:{key}"
    cache_path = getattr(datamodule, "cache_path", None)  # CachedDataModule: <dataset>/<digest>
    if isinstance(cache_path, Path):
        return f"cache_path:{cache_path.parent.name}/{cache_path.name}"
    return None


def dataset_fingerprint(datamodule: Any, split: str) -> str:
    """A sha256 that changes whenever the split's images or labels do.

    Uses the datamodule's own identity of its data when it has one — ``cache_key(split)``
    (generator parameters of the synthetic data) or ``cache_path`` (the digest of the source
    files and preprocessing of an on-disk dataset's decoded cache) — and otherwise hashes
    every image.
    Labels and the row count are always hashed (cheap, and they catch ``limit_train``).
    """
    s: ArraySplit = datamodule.splits[split]
    h = hashlib.sha256()
    h.update(f"{type(datamodule).__module__}.{type(datamodule).__qualname__}|{split}|".encode())
    h.update(f"rows:{len(s)}|images:{s.images.dtype.str}:{tuple(s.images.shape)}|".encode())
    source_key = _source_key(datamodule, split)
    if source_key:
        h.update(f"source:{source_key}|".encode())
    else:
        _update_array(h, s.images, "images")
    for name in ("expression", "valence", "arousal", "va_mask"):
        _update_array(h, getattr(s, name), name)
    return h.hexdigest()


def eval_dataset(datamodule: Any, split: str) -> ArrayAffectDataset:
    """``split`` with the evaluation transform (resize + normalise, no augmentation)."""
    return ArrayAffectDataset(datamodule.splits[split], datamodule.transform(train=False))


@torch.no_grad()
def run_teacher(
    teacher: FrozenTeacher,
    dataset: ArrayAffectDataset,
    data_spec: InputSpec,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
) -> TeacherOutputs:
    """Teacher outputs for every row of ``dataset`` (placed by the batches' ``index``)."""
    device = torch.device(device)
    n = len(dataset)
    c = len(teacher.class_names)
    logits = torch.empty(n, c, dtype=torch.float32)
    valence = torch.empty(n, dtype=torch.float32)
    arousal = torch.empty(n, dtype=torch.float32)
    seen = torch.zeros(n, dtype=torch.bool)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    with progress(f"teacher outputs ({n} images)", n) as advance:
        for batch in loader:
            x = batch["image"].to(device, non_blocking=True)
            out = teacher(adapt_images(x, data_spec, teacher.input_spec))
            idx = batch["index"].long()
            logits[idx] = out.expression.cpu()
            valence[idx] = out.valence.cpu()
            arousal[idx] = out.arousal.cpu()
            seen[idx] = True
            advance(len(idx))
    if not bool(seen.all()):
        raise RuntimeError(f"teacher pass covered {int(seen.sum())} of {n} rows")
    return TeacherOutputs(logits, valence, arousal)


class TeacherOutputCache:
    """Computes, stores and reads teacher outputs per split (see the module docstring)."""

    def __init__(
        self,
        cache_dir: str | Path,
        teacher: FrozenTeacher,
        data_spec: InputSpec,
        batch_size: int = 64,
        num_workers: int = 0,
    ) -> None:
        if not teacher.weights_sha256:
            raise ValueError("a cached teacher needs the sha256 of its weights file")
        if batch_size < 1:
            raise ConfigError(f"distill.cache_batch_size={batch_size}; expected >= 1")
        self.cache_dir = Path(cache_dir)
        self.teacher = teacher
        self.data_spec = data_spec
        self.batch_size = batch_size
        self.num_workers = num_workers
        #: How many splits were computed / read from disk by this object (for reports, tests).
        self.computed = 0
        self.loaded = 0

    def key(self, datamodule: Any, split: str) -> dict[str, Any]:
        return {
            "version": CACHE_VERSION,
            "split": split,
            "teacher_sha256": self.teacher.weights_sha256,
            "teacher_classes": list(self.teacher.class_names),
            "teacher_input": asdict(self.teacher.input_spec),
            "data_input": asdict(self.data_spec),
            "dataset": dataset_fingerprint(datamodule, split),
        }

    def path(self, key: dict[str, Any]) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        return self.cache_dir / "distill" / f"teacher-{key['split']}-{digest[:24]}.npz"

    def read(self, path: Path, key: dict[str, Any], rows: int) -> TeacherOutputs | None:
        """The stored outputs, or None (with a warning) when missing, unreadable or stale."""
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                stored = json.loads(str(z["key"]))
                out = TeacherOutputs(
                    torch.from_numpy(z["expression"].astype(np.float32)),
                    torch.from_numpy(z["valence"].astype(np.float32)),
                    torch.from_numpy(z["arousal"].astype(np.float32)),
                )
        except Exception as exc:  # noqa: BLE001 - any unreadable file is recomputed
            log.warning("teacher-output cache %s unreadable (%s); recomputing", path, exc)
            return None
        problem = None
        if stored != json.loads(json.dumps(key, sort_keys=True)):  # tuples stored as lists
            problem = "its key does not match"
        elif len(out) != rows:
            problem = f"it has {len(out)} rows, the split {rows}"
        elif out.expression.shape[1] != len(self.teacher.class_names):
            problem = (
                f"it has {out.expression.shape[1]} classes, the teacher "
                f"{len(self.teacher.class_names)}"
            )
        elif not all(
            bool(torch.isfinite(t).all()) for t in (out.expression, out.valence, out.arousal)
        ):
            problem = "it holds non-finite values"
        if problem:
            log.warning("teacher-output cache %s ignored: %s; recomputing", path, problem)
            return None
        return out

    def write(self, path: Path, key: dict[str, Any], out: TeacherOutputs) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(
                fh,
                key=np.array(json.dumps(key, sort_keys=True)),
                expression=out.expression.cpu().numpy(),
                valence=out.valence.cpu().numpy(),
                arousal=out.arousal.cpu().numpy(),
            )

    def get(
        self,
        datamodule: Any,
        split: str,
        device: torch.device | str = "cpu",
        compute: bool = True,
    ) -> TeacherOutputs:
        """Read the split's outputs, computing and writing them first when ``compute``
        (the writer rank) and they are missing. Returned on ``device``."""
        key = self.key(datamodule, split)
        path = self.path(key)
        rows = len(datamodule.splits[split])
        out = self.read(path, key, rows)
        if out is not None:
            self.loaded += 1
            log.info("teacher outputs for %s read from %s", split, path)
            return out.to(device)
        if not compute:
            raise FileNotFoundError(
                f"teacher-output cache {path} missing after the writer rank's barrier "
                "(is paths.cache_dir shared by every rank?)"
            )
        log.info("computing teacher outputs for the %s split (%d rows) -> %s", split, rows, path)
        out = run_teacher(
            self.teacher,
            eval_dataset(datamodule, split),
            self.data_spec,
            batch_size=self.batch_size,
            device=device,
            num_workers=self.num_workers,
        )
        self.write(path, key, out)
        self.computed += 1
        return out.to(device)
