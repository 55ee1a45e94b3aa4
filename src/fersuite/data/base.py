"""Array-backed datasets and the shared LightningDataModule for every FER dataset."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, default_collate

from fersuite.card import FaceCrop
from fersuite.data.batch_augment import BatchAugment, draw_params
from fersuite.data.samplers import ResumableSampler, repeated_indices
from fersuite.data.transforms import AugmentConfig, build_transforms
from fersuite.types import select_rows

SPLITS = ("train", "val", "test")


@dataclass
class ArraySplit:
    """One split held in memory (or memory-mapped): uint8 images and their labels.

    ``images``: (N, H, W) grayscale or (N, H, W, 3) RGB uint8. ``expression``: (N,) int64
    class indices, or (N, C) float32 vote distributions. ``valence``/``arousal``: (N,) float32
    or None; ``va_mask``: (N,) bool, False where VA is invalid.
    """

    images: np.ndarray
    expression: np.ndarray
    valence: np.ndarray | None = None
    arousal: np.ndarray | None = None
    va_mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.dtype != np.uint8 or self.images.ndim not in (3, 4):
            raise ValueError(
                "images must be uint8 (N,H,W) or (N,H,W,3), "
                f"got {self.images.dtype} {self.images.shape}"
            )
        for name in ("expression", "valence", "arousal", "va_mask"):
            arr = getattr(self, name)
            if arr is not None and len(arr) != n:
                raise ValueError(f"{name} has {len(arr)} entries but there are {n} images")
        if self.valence is not None and self.va_mask is None:
            self.va_mask = np.ones(n, dtype=bool)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def hard_labels(self) -> np.ndarray:
        return self.expression.argmax(1) if self.expression.ndim == 2 else self.expression


class ArrayAffectDataset(Dataset[dict[str, torch.Tensor]]):
    """Yields ``{"image", "expression", "index"[, "valence", "arousal", "va_mask"]}``."""

    def __init__(
        self, split: ArraySplit, transform: Callable[[torch.Tensor], torch.Tensor]
    ) -> None:
        self.split = split
        self.transform = transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        s = self.split
        img = torch.from_numpy(np.ascontiguousarray(s.images[idx]))
        img = img.unsqueeze(0) if img.ndim == 2 else img.permute(2, 0, 1)
        aug_seed = getattr(idx, "aug_seed", None)  # set by ResumableSampler (train split)
        if aug_seed is None:
            image = self.transform(img)
        else:  # augmentation drawn from its own seed: independent of the global RNG
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(aug_seed)
                image = self.transform(img)
        item: dict[str, torch.Tensor] = {
            "image": image,
            "expression": torch.as_tensor(s.expression[idx]),
            "index": torch.tensor(idx, dtype=torch.long),
        }
        if s.valence is not None and s.arousal is not None and s.va_mask is not None:
            item["valence"] = torch.tensor(float(s.valence[idx]), dtype=torch.float32)
            item["arousal"] = torch.tensor(float(s.arousal[idx]), dtype=torch.float32)
            item["va_mask"] = torch.tensor(bool(s.va_mask[idx]))
        return item


class PrebatchedDict(dict):  # type: ignore[type-arg]
    """A batch a dataset's ``__getitems__`` built whole (no per-sample collation needed)."""


def collate_prebatched(items: list[Any]) -> Any:
    """``collate_fn`` for :class:`BatchedArrayDataset`: its batches are already built."""
    if len(items) == 1 and isinstance(items[0], PrebatchedDict):
        return dict(items[0])
    return default_collate(items)


class BatchedArrayDataset(ArrayAffectDataset):
    """The train split for ``data.augment.device=batch``: whole batches of uint8 (N, C, H, W)
    images read at once from the (memory-mapped) arrays, plus ``aug``: each sample's
    augmentation parameters drawn from its sampler seed (:func:`~fersuite.data.batch_augment.
    draw_params`). Channels are as stored (1 or 3). The pixels are augmented later, on the
    device, by :class:`~fersuite.data.batch_augment.BatchAugment`."""

    def __init__(self, split: ArraySplit, augment: AugmentConfig) -> None:
        super().__init__(split, torch.nn.Identity())  # channels are matched on the device
        self.augment = augment

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        batch = self.__getitems__([idx])[0]
        return {k: v[0] for k, v in batch.items()}

    def __getitems__(self, indices: Sequence[int]) -> list[PrebatchedDict]:
        s = self.split
        rows = np.fromiter((int(i) for i in indices), dtype=np.int64, count=len(indices))
        order = np.argsort(rows, kind="stable")  # memory-mapped reads in file order
        images = np.empty((len(rows), *s.images.shape[1:]), dtype=np.uint8)
        images[order] = s.images[rows[order]]
        img = torch.from_numpy(images)
        img = img.unsqueeze(1) if img.ndim == 3 else img.permute(0, 3, 1, 2).contiguous()
        seeds = [getattr(i, "aug_seed", None) for i in indices]
        if any(seed is None for seed in seeds):  # no resumable sampler: the global RNG
            seeds = torch.randint(0, 2**62, (len(rows),)).tolist()
        batch = PrebatchedDict(
            image=self.transform(img),
            aug=draw_params(self.augment, seeds),  # type: ignore[arg-type]
            expression=torch.from_numpy(np.asarray(s.expression[rows])),
            index=torch.from_numpy(rows),
        )
        if s.valence is not None and s.arousal is not None and s.va_mask is not None:
            batch["valence"] = torch.from_numpy(np.asarray(s.valence[rows], dtype=np.float32))
            batch["arousal"] = torch.from_numpy(np.asarray(s.arousal[rows], dtype=np.float32))
            batch["va_mask"] = torch.from_numpy(np.asarray(s.va_mask[rows], dtype=bool))
        return [batch]


class AffectDataModule(L.LightningDataModule):
    """Shared loader logic; subclasses implement :meth:`load_splits` and ``class_names``."""

    class_names: tuple[str, ...] = ()
    has_va: bool = False

    def __init__(
        self,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        image_size: int = 48,
        in_chans: int = 1,
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.5,),
        augment: Mapping[str, Any] | AugmentConfig | None = None,
        sampler: str = "random",
        limit_train: int | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size={batch_size}; expected >= 1")
        if num_workers < 0:
            raise ValueError(f"data.num_workers={num_workers}; expected >= 0")
        if sampler not in ("random", "weighted"):
            raise ValueError(f"data.sampler={sampler!r}; expected 'random' or 'weighted'")
        if image_size < 8:
            raise ValueError(f"data.image_size={image_size}; expected >= 8")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.image_size = image_size
        self.in_chans = in_chans
        self.mean = tuple(mean)
        self.std = tuple(std)
        if isinstance(augment, Mapping):
            aug = dict(augment)
            if "crop_scale" in aug:
                aug["crop_scale"] = tuple(aug["crop_scale"])
            augment = AugmentConfig(**aug)
        self.augment = augment
        self.sampler = sampler
        self.limit_train = limit_train
        self.splits: dict[str, ArraySplit] = {}
        self._batch_augment: BatchAugment | None = None
        self._sampler_resume: dict[str, int] | None = None
        #: ((sampler id, epoch), its repeated indices) of the evaluation loader last seen.
        self._repeats: tuple[tuple[int, int], torch.Tensor | None] | None = None
        # Validate transform settings now, before any data is read.
        build_transforms(image_size, in_chans, self.mean, self.std, train=True, augment=augment)

    # -- to implement -------------------------------------------------------------------
    def load_splits(self) -> dict[str, ArraySplit]:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------
    @property
    def face_crop(self) -> FaceCrop:
        """How this data cuts a face out of an image file (recorded in the model card, used
        again at prediction time). Default: the images are already square face crops, used
        whole."""
        return FaceCrop(kind="whole")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            splits = self.load_splits()
            missing = [s for s in SPLITS if s not in splits]
            if missing:
                raise ValueError(f"{type(self).__name__} did not provide splits {missing}")
            if self.limit_train is not None:
                tr = splits["train"]
                n = min(self.limit_train, len(tr))
                splits["train"] = ArraySplit(
                    tr.images[:n],
                    tr.expression[:n],
                    None if tr.valence is None else tr.valence[:n],
                    None if tr.arousal is None else tr.arousal[:n],
                    None if tr.va_mask is None else tr.va_mask[:n],
                )
            self.splits = splits

    def class_counts(self, split: str = "train") -> np.ndarray:
        labels = self.splits[split].hard_labels
        return np.bincount(labels, minlength=self.num_classes)

    def class_weights(self) -> torch.Tensor:
        """Inverse-frequency weights of the train split, normalised to mean 1."""
        counts = self.class_counts("train").astype(np.float64)
        w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / self.num_classes, 0.0)
        w = w / w[counts > 0].mean()
        return torch.tensor(w, dtype=torch.float32)

    def train_sample_weights(self) -> torch.Tensor | None:
        """Per-sample weights of the train sampler (None: a permutation of the train split);
        ``data.sampler=weighted``: the inverse class frequencies."""
        if self.sampler != "weighted":
            return None
        per_class = self.class_weights().numpy()
        return torch.as_tensor(per_class[self.splits["train"].hard_labels])

    def dataset(self, split: str, train: bool | None = None) -> ArrayAffectDataset:
        """``split`` with the training transform (augmented) when ``train`` (default: the
        train split only), else the evaluation transform."""
        train = split == "train" if train is None else train
        if train and self.augment is not None and self.augment.device == "batch":
            return BatchedArrayDataset(self.splits[split], self.augment)
        return ArrayAffectDataset(self.splits[split], self.transform(train))

    def transform(self, train: bool) -> Any:
        """uint8 CHW image -> the model's input: the training transform (augmented) when
        ``train``, else the evaluation transform (resize + normalise)."""
        return build_transforms(
            self.image_size,
            self.in_chans,
            self.mean,
            self.std,
            train=train,
            augment=self.augment if train else None,
        )

    def _loader(self, split: str) -> DataLoader[dict[str, torch.Tensor]]:
        train = split == "train"
        ds = self.dataset(split)
        sampler = None
        # Every loader seeds its workers from a private generator: creating an iterator (each
        # validation, with non-persistent workers or none) must not draw from the global RNG,
        # or a run resumed from a checkpoint written just before validation would drift.
        generator = torch.Generator().manual_seed(torch.initial_seed())
        if train:  # epoch-seeded and resumable mid-epoch (fersuite.data.samplers)
            weights = self.train_sample_weights()
            replicas, rank = self._ddp_replicas()
            seed = _same_on_all_ranks(torch.initial_seed(), replicas)
            sampler = ResumableSampler(
                len(ds), seed=seed, weights=weights, num_replicas=replicas, rank=rank
            )
            if self._sampler_resume is not None:  # before the loader's first iterator exists
                sampler.load_state_dict(self._sampler_resume)
                self._sampler_resume = None
            generator = torch.Generator().manual_seed(seed)  # worker seeds: not the global RNG
        return DataLoader(
            ds,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=sampler,
            generator=generator,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            drop_last=train and len(ds) > self.batch_size,
            collate_fn=collate_prebatched if isinstance(ds, BatchedArrayDataset) else None,
        )

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Under DDP, a validation or test batch without the samples Lightning's distributed
        sampler repeated to pad this rank's share (:func:`~fersuite.data.samplers.
        repeated_indices`): the metrics then count every sample once, whatever the split's
        size. A batch may end up empty; the modules skip it."""
        trainer = getattr(self, "trainer", None)
        if (
            trainer is None
            or int(getattr(trainer, "world_size", 1)) <= 1
            or not (trainer.validating or trainer.testing or trainer.sanity_checking)
            or not isinstance(batch, dict)
            or "index" not in batch
        ):
            return batch
        loaders = trainer.test_dataloaders if trainer.testing else trainer.val_dataloaders
        if isinstance(loaders, list | tuple):
            loaders = loaders[dataloader_idx]
        sampler = getattr(loaders, "sampler", None)
        key = (id(sampler), getattr(sampler, "epoch", 0))
        if self._repeats is None or self._repeats[0] != key:
            self._repeats = (key, repeated_indices(sampler))
        repeats = self._repeats[1]
        if repeats is None:
            return batch
        keep = ~torch.isin(batch["index"], repeats)
        return batch if bool(keep.all()) else select_rows(batch, keep)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """``data.augment.device=batch``: augment the train batch on the device it reached."""
        if isinstance(batch, dict) and "aug" in batch:
            if self._batch_augment is None:
                assert self.augment is not None
                self._batch_augment = BatchAugment(
                    self.image_size, self.mean, self.std, self.in_chans, self.augment.erasing > 0
                )
            batch = dict(batch)
            batch["image"] = self._batch_augment(batch["image"], batch.pop("aug"))
        return batch

    def resume_train_sampler(self, state: dict[str, int]) -> None:
        """Start the next train loader's sampler at a checkpointed position (see
        :meth:`fersuite.data.samplers.ResumableSampler.load_state_dict`)."""
        self._sampler_resume = dict(state)

    def _ddp_replicas(self) -> tuple[int, int]:
        """(world size, global rank) of the attached trainer; (1, 0) without one."""
        trainer = getattr(self, "trainer", None)
        if trainer is None or int(getattr(trainer, "world_size", 1)) <= 1:
            return 1, 0
        return int(trainer.world_size), int(trainer.global_rank)

    def train_dataloader(self) -> DataLoader[dict[str, torch.Tensor]]:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader[dict[str, torch.Tensor]]:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader[dict[str, torch.Tensor]]:
        return self._loader("test")


def _same_on_all_ranks(seed: int, replicas: int) -> int:
    """Rank 0's ``seed`` on every rank (the sampler's order must agree across DDP ranks, also
    when no ``seed`` was set and each process seeded itself)."""
    if replicas <= 1 or not (dist.is_available() and dist.is_initialized()):
        return seed
    box = [seed]
    dist.broadcast_object_list(box, src=0)
    return int(box[0])
