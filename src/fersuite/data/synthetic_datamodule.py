"""``data=synthetic``: the built-in procedurally rendered faces, generated once and cached."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fersuite.card import FaceCrop
from fersuite.data.base import AffectDataModule, ArraySplit
from fersuite.data.synthetic import check_style, render_faces
from fersuite.errors import ConfigError
from fersuite.labels import CANONICAL_CLASSES, canonical_name
from fersuite.utils.io import atomic_path

log = logging.getLogger(__name__)

#: Bump when the renderer changes so stale caches are not reused.
GENERATOR_VERSION = 1
#: Bounds checked before anything is rendered (a split of MAX_SPLIT 48x48 faces is ~0.5 GB).
MAX_SPLIT = 200_000
RENDER_SIZES = (16, 512)


class SyntheticDataModule(AffectDataModule):
    """8 expression classes (AffectNet order) with valence/arousal, any resolution.

    ``classes`` keeps only the faces of those classes (canonical order; the rendered faces and
    their cache are the same, the other classes' faces are dropped) and ``with_va=false``
    drops the valence/arousal labels: a dataset that lacks classes or VA, as a source of
    ``data=multi`` (both unset: the 8 classes with VA, as always).

    ``lighting``, ``contrast`` and ``invert`` are the domain style of every face (see
    :func:`fersuite.data.synthetic.check_style`): a second dataset that looks like another
    camera, e.g. ``data=synthetic_b``. Their defaults render the faces as before.
    """

    class_names = CANONICAL_CLASSES
    has_va = True

    def __init__(
        self,
        train_size: int = 4000,
        val_size: int = 1000,
        test_size: int = 1000,
        render_size: int = 48,
        seed: int = 0,
        difficulty: float = 1.0,
        noise: float = 0.04,
        lighting: Sequence[float] = (0.0, 0.0),
        contrast: float = 1.0,
        invert: bool = False,
        cache_dir: str | None = None,
        classes: Sequence[str] | None = None,
        with_va: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if classes is not None:
            if isinstance(classes, str) or not classes:
                raise ConfigError(f"data.classes={classes!r}; expected a list of class names")
            try:
                wanted = {canonical_name(str(c)) for c in classes}
            except ValueError as exc:
                raise ConfigError(f"data.classes: {exc}") from exc
            self.class_names = tuple(c for c in CANONICAL_CLASSES if c in wanted)
        self.has_va = bool(with_va)
        for key, n in (
            ("train_size", train_size),
            ("val_size", val_size),
            ("test_size", test_size),
        ):
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_SPLIT:
                raise ConfigError(f"data.{key}={n}; expected an integer in 1..{MAX_SPLIT}")
        lo, hi = RENDER_SIZES
        if isinstance(render_size, bool) or not isinstance(render_size, int):
            raise ConfigError(f"data.render_size={render_size!r}; expected an integer")
        if not lo <= render_size <= hi:
            raise ConfigError(f"data.render_size={render_size}; expected {lo}..{hi}")
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.render_size = render_size
        self.seed = seed
        self.difficulty = difficulty
        self.noise = noise
        try:
            self.lighting, self.contrast, self.invert = check_style(lighting, contrast, invert)
        except ValueError as exc:
            raise ConfigError(f"data.{exc}") from exc
        self.cache_dir = Path(cache_dir) if cache_dir else None

    @property
    def face_crop(self) -> FaceCrop:
        """The rendered square faces, used whole."""
        return FaceCrop(kind="whole", crop_size=self.render_size)

    def cache_key(self, split: str) -> str:
        params = {
            "v": GENERATOR_VERSION,
            "split": split,
            "n": self.sizes[split],
            "size": self.render_size,
            "seed": self.seed,
            "difficulty": self.difficulty,
            "noise": self.noise,
        }
        # The style joins the key only when it differs from the defaults, so the caches (and
        # the keys derived from them) of unstyled faces stay valid.
        style = {"lighting": list(self.lighting), "contrast": self.contrast, "invert": self.invert}
        if style != {"lighting": [0.0, 0.0], "contrast": 1.0, "invert": False}:
            params["style"] = style
        return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]

    def _split_seed(self, split: str) -> int:
        return self.seed * 1000 + {"train": 0, "val": 1, "test": 2}[split]

    def _render(self, split: str) -> ArraySplit:
        faces = render_faces(
            self.sizes[split],
            size=self.render_size,
            seed=self._split_seed(split),
            noise=self.noise,
            difficulty=self.difficulty,
            lighting=self.lighting,
            contrast=self.contrast,
            invert=self.invert,
        )
        return ArraySplit(faces.images, faces.expression, faces.valence, faces.arousal)

    def _load_or_render(self, split: str) -> ArraySplit:
        if self.cache_dir is None:
            return self._render(split)
        path = self.cache_dir / "synthetic" / f"{split}-{self.cache_key(split)}.npz"
        if path.is_file():
            try:
                with np.load(path) as z:
                    return ArraySplit(z["images"], z["expression"], z["valence"], z["arousal"])
            except Exception as exc:  # noqa: BLE001
                log.warning("synthetic cache %s unreadable (%s); regenerating", path, exc)
        split_data = self._render(split)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(
                fh,
                images=split_data.images,
                expression=split_data.expression,
                valence=split_data.valence,
                arousal=split_data.arousal,
            )
        return split_data

    def load_splits(self) -> dict[str, ArraySplit]:
        return {
            split: self._select(self._load_or_render(split)) for split in ("train", "val", "test")
        }

    def _select(self, split: ArraySplit) -> ArraySplit:
        """The faces of :attr:`class_names` (labels renumbered), with VA when ``with_va``."""
        if self.class_names == CANONICAL_CLASSES:
            keep = slice(None)
            labels = split.expression
        else:
            index = [CANONICAL_CLASSES.index(c) for c in self.class_names]
            keep = np.flatnonzero(np.isin(split.expression, index))
            lookup = np.full(len(CANONICAL_CLASSES), -1, dtype=np.int64)
            lookup[index] = np.arange(len(index))
            labels = lookup[split.expression[keep]]
        if not self.has_va:
            return ArraySplit(split.images[keep], labels)
        if isinstance(keep, slice):
            return split
        assert split.valence is not None and split.arousal is not None
        return ArraySplit(split.images[keep], labels, split.valence[keep], split.arousal[keep])
