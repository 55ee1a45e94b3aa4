"""Image transforms from config: resize, channel matching, normalisation, augmentation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torchvision.transforms import v2

AUGMENT_DEVICES = ("sample", "batch")


@dataclass
class AugmentConfig:
    """Train-time augmentation. Horizontal flips are safe for expression labels (contempt
    stays contempt whichever side the lip corner rises on) and for valence/arousal."""

    hflip: float = 0.5
    rotation: float = 10.0
    crop_scale: tuple[float, float] = (0.8, 1.0)
    brightness: float = 0.2
    contrast: float = 0.2
    erasing: float = 0.0
    #: Beta alphas of batch mixup / cutmix (0: off); applied by the training module on the
    #: batch (fersuite.data.mixing), not per sample.
    mixup: float = 0.0
    cutmix: float = 0.0
    #: Where the per-image augmentation runs: ``sample`` (torchvision, in the loader workers)
    #: or ``batch`` (one batched pass on the training device; fersuite.data.batch_augment).
    device: str = "sample"

    def __post_init__(self) -> None:
        if self.device not in AUGMENT_DEVICES:
            raise ValueError(
                f"data.augment.device={self.device!r}; expected one of {', '.join(AUGMENT_DEVICES)}"
            )
        if not 0.0 <= self.hflip <= 1.0:
            raise ValueError(f"data.augment.hflip={self.hflip}; expected a probability in [0, 1]")
        if not 0.0 <= self.erasing <= 1.0:
            raise ValueError(
                f"data.augment.erasing={self.erasing}; expected a probability in [0, 1]"
            )
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(
                f"data.augment.crop_scale={list(self.crop_scale)}; expected 0 < lo <= hi <= 1"
            )
        if self.rotation < 0:
            raise ValueError(f"data.augment.rotation={self.rotation}; expected degrees >= 0")


class MatchChannels(torch.nn.Module):
    """Convert a uint8 CHW image to ``channels`` channels (gray <-> RGB)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels not in (1, 3):
            raise ValueError(f"in_chans={channels}; fersuite supports 1 (grayscale) or 3 (RGB)")
        self.channels = channels

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        c = img.shape[-3]
        if c == self.channels:
            return img
        if self.channels == 3 and c == 1:
            return img.expand(*img.shape[:-3], 3, *img.shape[-2:])
        if self.channels == 1 and c == 3:
            weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32).view(3, 1, 1)
            gray = (img.float() * weights).sum(dim=-3, keepdim=True)
            return gray.round().clamp(0, 255).to(img.dtype)
        raise ValueError(f"cannot convert an image with {c} channels to {self.channels}")


def build_transforms(
    image_size: int,
    in_chans: int,
    mean: Sequence[float],
    std: Sequence[float],
    train: bool,
    augment: AugmentConfig | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 CHW tensor -> normalised float tensor of shape (in_chans, size, size)."""
    mean_t = _per_channel(mean, in_chans, "data.mean")
    std_t = _per_channel(std, in_chans, "data.std")
    ops: list[torch.nn.Module] = [MatchChannels(in_chans)]
    if train and augment is not None:
        ops.append(
            v2.RandomResizedCrop(
                image_size, scale=augment.crop_scale, ratio=(0.9, 1.1), antialias=True
            )
        )
        if augment.hflip > 0:
            ops.append(v2.RandomHorizontalFlip(augment.hflip))
        if augment.rotation > 0:
            ops.append(v2.RandomRotation(augment.rotation))
        if augment.brightness > 0 or augment.contrast > 0:
            ops.append(v2.ColorJitter(brightness=augment.brightness, contrast=augment.contrast))
    else:
        ops.append(v2.Resize((image_size, image_size), antialias=True))
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean_t, std_t)]
    if train and augment is not None and augment.erasing > 0:
        ops.append(v2.RandomErasing(augment.erasing, value=0))
    return v2.Compose(ops)


def _per_channel(values: Sequence[float], channels: int, key: str) -> list[float]:
    vals = [float(v) for v in values]
    if len(vals) == 1:
        vals = vals * channels
    if len(vals) != channels:
        raise ValueError(f"{key} has {len(vals)} values; expected 1 or {channels} (in_chans)")
    if key.endswith("std") and any(v <= 0 for v in vals):
        raise ValueError(f"{key}={vals}; standard deviations must be > 0")
    return vals
