"""``data=multi``: several datasets trained on at once, each a ``data.sources.<name>`` node.

Each source is a complete dataset node (its own ``_target_``, root, cache, ...), built from the
composed (trusted) config and read as it would be alone, into its own cache. The multi module
then

* maps every source's classes to the canonical names (:mod:`fersuite.labels`); its classes are
  ``data.classes`` or the union of the sources' in canonical order;
* gives every sample ``class_mask`` (K,) bool, the classes its source has (the supervised loss
  never uses a class its source lacks as a negative: :func:`fersuite.losses.affect.
  masked_cross_entropy`), and ``source`` (its source's position in ``data.sources``), which
  the module reads to log ``val/<source>/<metric>`` and ``test/<source>/<metric>``;
* gives a source without valence/arousal zeros with ``va_mask`` False (never supervised);
* converts every image to its own input spec (``image_size``, ``in_chans``, ``mean``/``std``)
  with the shared transforms;
* draws training samples from the sources in proportion to ``data.sampling``: ``proportional``
  (to their size: a permutation of all of them), ``balanced`` (each source equally often) or
  ``{name: weight}``, with :class:`~fersuite.data.samplers.ResumableSampler` (exact resume).
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset

from fersuite.card import FaceCrop
from fersuite.config_schema import check_target_node
from fersuite.data.base import SPLITS, AffectDataModule, ArrayAffectDataset, ArraySplit
from fersuite.data.samplers import SeededIndex
from fersuite.errors import ConfigError
from fersuite.labels import CANONICAL_CLASSES, canonical_name, canonical_names

log = logging.getLogger(__name__)

SAMPLING_MODES = ("proportional", "balanced")


class SourceDataset(Dataset[dict[str, torch.Tensor]]):
    """One source's split in the multi module's terms: labels mapped to its classes, global
    ``index`` (``offset`` + row), ``source``, ``class_mask`` and (``with_va``) VA keys."""

    def __init__(
        self,
        base: ArrayAffectDataset,
        source: int,
        label_map: np.ndarray,
        class_mask: torch.Tensor,
        offset: int,
        with_va: bool,
    ) -> None:
        self.base = base
        self.source = torch.tensor(source, dtype=torch.long)
        self.label_map = torch.as_tensor(label_map, dtype=torch.long)
        self.class_mask = class_mask
        self.offset = offset
        self.with_va = with_va

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        item = self.base[idx]
        expr = item["expression"]
        if expr.ndim == 0:
            item["expression"] = self.label_map[int(expr)]
        else:  # a vote distribution over the source's classes -> over the multi classes
            soft = torch.zeros(len(self.class_mask), dtype=torch.float32)
            soft[self.label_map] = expr.float()
            item["expression"] = soft
        item["index"] = torch.tensor(self.offset + int(idx), dtype=torch.long)
        item["source"] = self.source
        item["class_mask"] = self.class_mask
        if self.with_va and "valence" not in item:
            item["valence"] = torch.tensor(0.0)
            item["arousal"] = torch.tensor(0.0)
            item["va_mask"] = torch.tensor(False)
        return item


class MultiDataset(Dataset[dict[str, torch.Tensor]]):
    """The sources' datasets one after the other (like ``ConcatDataset``, but an index keeps
    the augmentation seed the resumable sampler gave it)."""

    def __init__(self, parts: Sequence[SourceDataset]) -> None:
        self.parts = list(parts)
        self.ends = list(np.cumsum([len(p) for p in self.parts]).tolist())

    def __len__(self) -> int:
        return self.ends[-1] if self.ends else 0

    def locate(self, idx: int) -> tuple[int, int]:
        """(source position, row in that source) of global index ``idx``."""
        part = bisect.bisect_right(self.ends, int(idx))
        start = self.ends[part - 1] if part else 0
        return part, int(idx) - start

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        part, row = self.locate(idx)
        seed = getattr(idx, "aug_seed", None)
        return self.parts[part][SeededIndex(row, seed) if seed is not None else row]


def _build_source(name: str, node: Any) -> AffectDataModule:
    """A source: an AffectDataModule, or its config node (``_target_`` an AffectDataModule,
    keys checked against its signature) instantiated."""
    key = f"data.sources.{name}"
    if isinstance(node, AffectDataModule):
        return node
    if not isinstance(node, Mapping | DictConfig) or "_target_" not in node:
        raise ConfigError(f"{key} is not a dataset node (expected a data/*.yaml with _target_)")
    plain = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    assert isinstance(plain, Mapping)
    try:
        cls = get_class(str(plain["_target_"]))
    except Exception as exc:  # hydra wraps the import error
        raise ConfigError(f"{key}._target_={plain['_target_']!r} cannot be imported") from exc
    if not (isinstance(cls, type) and issubclass(cls, AffectDataModule)):
        raise ConfigError(f"{key}._target_={plain['_target_']!r} is not a fersuite dataset")
    if issubclass(cls, MultiDataModule):
        raise ConfigError(f"{key}: a data=multi source cannot itself be data=multi")
    check_target_node(key, plain)
    dm = instantiate(plain, _recursive_=False)
    assert isinstance(dm, AffectDataModule)
    return dm


class MultiDataModule(AffectDataModule):
    """Several datasets (``sources``: name -> dataset node or AffectDataModule) as one.

    Args:
        sources: the datasets, in order (the order of the ``source`` key and of the logs).
        sampling: ``proportional`` | ``balanced`` | ``{name: weight}`` (every source named,
            weights >= 0, not all 0): the share of training samples drawn from each source.
        classes: the multi module's classes (canonical names, any order given here is kept);
            None: the union of the sources' classes in canonical order.
        **kwargs: the loader keys (``data/_loader.yaml``): one input spec for all sources.
    """

    def __init__(
        self,
        sources: Mapping[str, Any],
        sampling: str | Mapping[str, float] = "proportional",
        classes: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(sources, Mapping | DictConfig) or not sources:
            raise ConfigError("data.sources is empty; expected name: <dataset node> entries")
        if self.augment is not None and self.augment.device == "batch":
            raise ConfigError(
                "data.augment.device=batch is not supported by data=multi (its sources' "
                "images differ in size); use data.augment.device=sample"
            )
        self.sources: dict[str, AffectDataModule] = {
            str(name): _build_source(str(name), node) for name, node in sources.items()
        }
        self.source_names: tuple[str, ...] = tuple(self.sources)
        self.sampling = self._check_sampling(sampling)
        self._classes = None if classes is None else self._check_classes(classes)
        #: Per split, every sample's class index (sources in order), set by :meth:`setup`.
        self.labels: dict[str, np.ndarray] = {}

    # -- configuration ---------------------------------------------------------------------------
    def _check_sampling(self, sampling: Any) -> str | dict[str, float]:
        if isinstance(sampling, str):
            if sampling not in SAMPLING_MODES:
                raise ConfigError(
                    f"data.sampling={sampling!r}; expected proportional, balanced or "
                    "{name: weight}"
                )
            return sampling
        if not isinstance(sampling, Mapping | DictConfig):
            raise ConfigError(f"data.sampling={sampling!r}; expected a mode or {{name: weight}}")
        weights = {str(k): v for k, v in sampling.items()}
        unknown = sorted(set(weights) - set(self.source_names))
        missing = [n for n in self.source_names if n not in weights]
        if unknown or missing:
            what = f"unknown source(s) {', '.join(unknown)}" if unknown else ""
            what += ("; " if what else "") + (
                f"no weight for {', '.join(missing)}" if missing else ""
            )
            raise ConfigError(f"data.sampling: {what} (sources: {', '.join(self.source_names)})")
        for name, w in weights.items():
            if isinstance(w, bool) or not isinstance(w, int | float) or w < 0:
                raise ConfigError(f"data.sampling.{name}={w!r}; expected a number >= 0")
        if sum(weights.values()) <= 0:
            raise ConfigError("data.sampling: every weight is 0")
        return {k: float(v) for k, v in weights.items()}

    def _check_classes(self, classes: Sequence[str]) -> tuple[str, ...]:
        if isinstance(classes, str) or not classes:
            raise ConfigError(f"data.classes={classes!r}; expected a list of class names")
        try:
            return canonical_names(classes, "data.classes")
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc

    def source_classes(self, name: str) -> tuple[str, ...]:
        """The canonical names of source ``name``'s classes (ConfigError naming an unknown one)."""
        try:
            return tuple(canonical_name(c) for c in self.sources[name].class_names)
        except ValueError as exc:
            raise ConfigError(f"data.sources.{name}: {exc}") from exc

    @property
    def class_names(self) -> tuple[str, ...]:  # type: ignore[override]
        if self._classes is not None:
            return self._classes
        found = {c for name in self.source_names for c in self.source_classes(name)}
        return tuple(c for c in CANONICAL_CLASSES if c in found)

    @property
    def has_va(self) -> bool:  # type: ignore[override]
        return any(self.source_has_va)

    @property
    def source_has_va(self) -> tuple[bool, ...]:
        """Whether each source has valence/arousal labels."""
        return tuple(bool(s.has_va) for s in self.sources.values())

    @property
    def face_crop(self) -> FaceCrop:
        """The first source's face crop (recorded in the model card)."""
        return self.sources[self.source_names[0]].face_crop

    def label_map(self, name: str) -> np.ndarray:
        """For each class of source ``name``, its index among :attr:`class_names`."""
        classes = self.class_names
        own = self.source_classes(name)
        extra = [c for c in own if c not in classes]
        if extra:
            raise ConfigError(
                f"data.sources.{name} has class(es) {', '.join(extra)} that data.classes "
                f"({', '.join(classes)}) lacks"
            )
        return np.array([classes.index(c) for c in own], dtype=np.int64)

    def class_mask(self, name: str) -> torch.Tensor:
        mask = torch.zeros(len(self.class_names), dtype=torch.bool)
        mask[torch.as_tensor(self.label_map(name))] = True
        return mask

    # -- data -----------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        for source in self.sources.values():
            source.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        if self.labels:
            return
        for name, source in self.sources.items():
            source.setup(stage)
            self.label_map(name)  # refuse a class the multi classes lack, before training
            if self.limit_train is not None:
                tr = source.splits["train"]
                n = min(self.limit_train, len(tr))
                source.splits["train"] = ArraySplit(
                    tr.images[:n],
                    tr.expression[:n],
                    None if tr.valence is None else tr.valence[:n],
                    None if tr.arousal is None else tr.arousal[:n],
                    None if tr.va_mask is None else tr.va_mask[:n],
                )
        # The sources' hard labels in multi class indices (counts, class weights). ``splits``
        # stays empty: the images are the sources' (their own sizes), read through dataset().
        self.labels = {
            split: np.concatenate(
                [self.label_map(n)[s.splits[split].hard_labels] for n, s in self.sources.items()]
            )
            for split in SPLITS
        }
        sizes = ", ".join(f"{n} {len(s.splits['train'])}" for n, s in self.sources.items())
        log.info("data=multi: %d classes; train samples per source: %s", self.num_classes, sizes)

    def class_counts(self, split: str = "train") -> np.ndarray:
        return np.bincount(self.labels[split], minlength=self.num_classes)

    def source_sizes(self, split: str = "train") -> dict[str, int]:
        return {n: len(s.splits[split]) for n, s in self.sources.items()}

    def dataset(self, split: str, train: bool | None = None) -> MultiDataset:  # type: ignore[override]
        train = split == "train" if train is None else train
        tf = self.transform(train)
        parts: list[SourceDataset] = []
        offset = 0
        for i, (name, source) in enumerate(self.sources.items()):
            base = ArrayAffectDataset(source.splits[split], tf)
            parts.append(
                SourceDataset(
                    base, i, self.label_map(name), self.class_mask(name), offset, self.has_va
                )
            )
            offset += len(base)
        return MultiDataset(parts)

    def source_weights(self) -> dict[str, float]:
        """The share of training samples each source gets (sums to 1)."""
        sizes = self.source_sizes("train")
        if self.sampling == "proportional":
            raw = {n: float(v) for n, v in sizes.items()}
        elif self.sampling == "balanced":
            raw = {n: 1.0 for n in sizes}
        else:
            assert isinstance(self.sampling, dict)
            raw = dict(self.sampling)
        total = sum(raw.values())
        return {n: w / total for n, w in raw.items()}

    def train_sample_weights(self) -> torch.Tensor | None:
        """None (a permutation) for ``proportional`` sampling without ``data.sampler=weighted``;
        else each sample ``share(source) / size(source)`` (``weighted``: spread over the
        source's samples by inverse class frequency within the source)."""
        if self.sampling == "proportional" and self.sampler != "weighted":
            return None
        shares = self.source_weights()
        out = []
        for name, source in self.sources.items():
            labels = source.splits["train"].hard_labels
            if self.sampler == "weighted":
                counts = np.bincount(labels, minlength=len(source.class_names)).astype(np.float64)
                w = 1.0 / np.maximum(counts, 1.0)[labels]
            else:
                w = np.ones(len(labels), dtype=np.float64)
            out.append(shares[name] * w / w.sum())
        return torch.as_tensor(np.concatenate(out))
