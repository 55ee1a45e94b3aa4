"""Mixup and cutmix of training batches, with soft expression targets and mixed valence/arousal.

``data.augment.mixup`` and ``data.augment.cutmix`` are the alphas of the Beta(alpha, alpha)
distribution the mixing weight ``lam`` is drawn from (0: off). With both on, each batch uses one
of the two, chosen with probability 1/2. Every sample ``i`` is mixed with sample ``perm[i]`` of
the same batch:

* mixup: ``x = lam * x + (1 - lam) * x[perm]``;
* cutmix: a box covering ``1 - lam`` of the image is pasted from ``x[perm]``; ``lam`` is then
  recomputed from the clipped box, so targets match the pixels.

Targets are mixed with the same weight: the expression target becomes a probability vector
(hard labels become one-hot first; FER+ vote distributions stay distributions) that sums to one,
and valence/arousal become ``lam * v + (1 - lam) * v[perm]``, valid only where both samples'
were (``va_mask``). The draw for a batch depends only on ``(seed, epoch, batch index, rank)``, so
runs repeat and a resumed run mixes its remaining batches exactly as the uninterrupted one.

timm's ``Mixup`` and torchvision's ``v2.MixUp``/``v2.CutMix`` draw from the global RNG and mix
only class labels, so this small class is written here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class BatchMixing:
    """Mixup/cutmix of a training batch dict (``image``, ``expression`` and optional
    ``valence``/``arousal``/``va_mask``). ``num_classes`` sizes the one-hot targets."""

    mixup: float = 0.0
    cutmix: float = 0.0
    num_classes: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        for key, alpha in (("mixup", self.mixup), ("cutmix", self.cutmix)):
            if alpha < 0:
                raise ValueError(f"data.augment.{key}={alpha}; expected a Beta alpha >= 0 (0: off)")
        if self.enabled and self.num_classes < 1:
            raise ValueError("mixup/cutmix needs the number of classes")

    @property
    def enabled(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    def rng(self, epoch: int, batch_idx: int, rank: int) -> np.random.Generator:
        """The generator of one batch's draws: a function of (seed, epoch, batch, rank) only."""
        return np.random.default_rng([self.seed & 0xFFFFFFFF, epoch, batch_idx, rank])

    def draw(self, rng: np.random.Generator, n: int) -> tuple[str, float, np.ndarray]:
        """(``"mixup"`` or ``"cutmix"``, lam, permutation) for one batch of ``n`` samples."""
        if self.mixup > 0 and self.cutmix > 0:
            mode = "cutmix" if rng.random() < 0.5 else "mixup"
        else:
            mode = "mixup" if self.mixup > 0 else "cutmix"
        alpha = self.mixup if mode == "mixup" else self.cutmix
        lam = float(rng.beta(alpha, alpha))
        return mode, lam, rng.permutation(n)

    def __call__(
        self, batch: dict[str, torch.Tensor], epoch: int, batch_idx: int, rank: int = 0
    ) -> dict[str, torch.Tensor]:
        """The mixed batch (a new dict; the input is not modified)."""
        if not self.enabled:
            return batch
        x = batch["image"]
        rng = self.rng(epoch, batch_idx, rank)
        mode, lam, perm_np = self.draw(rng, x.shape[0])
        perm = torch.as_tensor(perm_np, device=x.device)
        out = dict(batch)
        if mode == "mixup":
            out["image"] = x * lam + x[perm] * (1.0 - lam)
        else:
            out["image"], lam = _paste_box(x, perm, lam, rng)
        target = soft_targets(batch["expression"], self.num_classes)
        out["expression"] = target * lam + target[perm] * (1.0 - lam)
        for key in ("valence", "arousal"):
            if key in batch:
                v = batch[key]
                out[key] = v * lam + v[perm] * (1.0 - lam)
        if "va_mask" in batch:
            out["va_mask"] = batch["va_mask"] & batch["va_mask"][perm]
        if "class_mask" in batch:  # data=multi: a mixed target may use either sample's classes
            out["class_mask"] = batch["class_mask"] | batch["class_mask"][perm]
        return out


def soft_targets(expression: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Hard labels (N,) -> one-hot float (N, C); soft targets (N, C) pass through as float."""
    if expression.ndim == 2:
        if expression.shape[1] != num_classes:
            raise ValueError(
                f"soft expression targets have {expression.shape[1]} classes; the model predicts "
                f"{num_classes}"
            )
        return expression.float()
    return torch.nn.functional.one_hot(expression.long(), num_classes).float()


def _paste_box(
    x: torch.Tensor, perm: torch.Tensor, lam: float, rng: np.random.Generator
) -> tuple[torch.Tensor, float]:
    """Paste a box of area ``(1 - lam)·H·W`` (clipped at the border) from ``x[perm]``; the
    returned weight is the share of pixels left from each sample's own image."""
    h, w = x.shape[-2:]
    cut = float(np.sqrt(1.0 - lam))
    bh, bw = round(h * cut), round(w * cut)
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    y0, y1 = max(cy - bh // 2, 0), min(cy + bh - bh // 2, h)
    x0, x1 = max(cx - bw // 2, 0), min(cx + bw - bw // 2, w)
    out = x.clone()
    out[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
    return out, 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)
