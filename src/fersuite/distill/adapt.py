"""Adapting one batch, on its device, to what each model expects (its ``InputSpec``, the
``input`` of its :class:`~fersuite.card.ModelCard`).

The data pipeline produces one normalised batch (the *data spec*: size, channels, mean,
std). The teacher and the student may want something else — EmoNet takes 256×256 RGB in
[0, 1], a student 224×224 RGB normalised or 48×48 grayscale — so the batch is
un-normalised, converted gray↔RGB, resized with ``F.interpolate`` and re-normalised. No
second data pipeline is involved.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fersuite.card import channel_stats, spec_from
from fersuite.types import InputSpec

__all__ = ["LUMA_WEIGHTS", "adapt_images", "channel_stats", "same_input", "spec_from"]

#: ITU-R BT.601 luma, as used by the data pipeline's RGB -> grayscale conversion.
LUMA_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)


def _normalised(spec: InputSpec) -> InputSpec:
    return spec_from(spec.size, spec.channels, spec.mean, spec.std)


def same_input(src: InputSpec, dst: InputSpec) -> bool:
    """True when a batch made for ``src`` is already what ``dst`` expects."""
    return _normalised(src) == _normalised(dst)


def _stat(values: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)


def adapt_images(x: torch.Tensor, src: InputSpec, dst: InputSpec) -> torch.Tensor:
    """Convert a (B, C, H, W) batch normalised for ``src`` into one for ``dst``.

    Steps (each skipped when not needed): un-normalise with ``src`` mean/std, RGB->gray
    (BT.601 luma) before resizing, bilinear resize (antialiased when shrinking), gray->RGB
    after resizing, re-normalise with ``dst`` mean/std. Pixel values are in [0, 1] in between.
    """
    if x.ndim != 4:
        raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    src, dst = _normalised(src), _normalised(dst)
    if x.shape[1] != src.channels:
        raise ValueError(
            f"the batch has {x.shape[1]} channels but its spec says {src.channels} (data.in_chans)"
        )
    if src == dst and x.shape[-1] == dst.size and x.shape[-2] == dst.size:
        return x
    if not x.is_floating_point():
        raise ValueError(f"expected a float batch, got {x.dtype}")
    pixels = x * _stat(src.std, x) + _stat(src.mean, x)
    if src.channels == 3 and dst.channels == 1:
        pixels = (pixels * _stat(LUMA_WEIGHTS, pixels)).sum(dim=1, keepdim=True)
    h, w = pixels.shape[-2:]
    if (h, w) != (dst.size, dst.size):
        shrinking = dst.size < h or dst.size < w
        pixels = F.interpolate(
            pixels,
            size=(dst.size, dst.size),
            mode="bilinear",
            align_corners=False,
            antialias=shrinking,
        )
    if pixels.shape[1] == 1 and dst.channels == 3:
        pixels = pixels.expand(-1, 3, -1, -1)
    return (pixels - _stat(dst.mean, pixels)) / _stat(dst.std, pixels)
