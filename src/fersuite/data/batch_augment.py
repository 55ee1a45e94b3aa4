"""Batched training augmentation on the training device (``data.augment.device=batch``).

Per-sample augmentation on the CPU (``data.augment.device=sample``, the default) costs a few
milliseconds per 224x224 image in the loader workers. In ``batch`` mode the loader only reads
uint8 images from the (memory-mapped) cache, a whole batch at a time, and draws each sample's
augmentation *parameters* (a few numbers) from that sample's seed; after the batch reaches the
device (``LightningDataModule.on_after_batch_transfer``) one batched pass applies them:

1. random resized crop + rotation + horizontal flip as **one affine grid per sample**
   (``F.affine_grid`` + bilinear ``F.grid_sample``, zeros outside the image), producing the
   model's ``image_size`` directly;
2. brightness and contrast factors (contrast around each image's mean gray level);
3. normalisation with the data's mean/std;
4. random erasing (value 0 after normalisation) in a box per sample.

This is the same family and ranges as the per-sample pipeline (``data.augment.*``), not the
same pixels: torchvision applies colour jitter in a random order, retries erasing boxes and
antialiases downscaling; the batched pass applies brightness before contrast, clips boxes to
the image and samples bilinearly. Every parameter still derives from the sampler's per-sample
seed ``(seed, epoch, position)``, so runs repeat and a resumed run is exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fersuite.data.transforms import AugmentConfig

__all__ = ["AUG_PARAMS", "BatchAugment", "draw_params"]

#: Columns of the per-sample parameter rows (``batch["aug"]``).
AUG_PARAMS = (
    "crop_w",  # crop width / image width
    "crop_h",
    "crop_cx",  # crop centre in normalised [-1, 1] coordinates
    "crop_cy",
    "angle",  # rotation in radians
    "flip",  # -1 mirrored, 1 not
    "brightness",  # multiplicative factors
    "contrast",
    "erase",  # 1: erase the box below
    "erase_x0",  # box in [0, 1] fractions of the output image
    "erase_y0",
    "erase_x1",
    "erase_y1",
)
_ERASE_SCALE = (0.02, 0.33)  # torchvision RandomErasing's defaults
_ERASE_RATIO = (0.3, 3.3)
_CROP_RATIO = (0.9, 1.1)  # the per-sample RandomResizedCrop's ratio


def draw_params(aug: AugmentConfig, seeds: Sequence[int]) -> torch.Tensor:
    """(N, len(AUG_PARAMS)) float32 parameters, row ``i`` drawn only from ``seeds[i]``."""
    out = np.zeros((len(seeds), len(AUG_PARAMS)), dtype=np.float32)
    lo, hi = aug.crop_scale
    log_ratio = (math.log(_CROP_RATIO[0]), math.log(_CROP_RATIO[1]))
    log_erase = (math.log(_ERASE_RATIO[0]), math.log(_ERASE_RATIO[1]))
    for i, seed in enumerate(seeds):
        rng = np.random.default_rng(int(seed) & ((1 << 63) - 1))
        u = rng.random(13)
        area = lo + (hi - lo) * u[0]
        ratio = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[1])
        w, h = math.sqrt(area * ratio), math.sqrt(area / ratio)
        if w > 1.0 or h > 1.0:  # that aspect does not fit: a square of that area
            w = h = math.sqrt(area)
        cx = (1.0 - w) * (2.0 * u[2] - 1.0)
        cy = (1.0 - h) * (2.0 * u[3] - 1.0)
        angle = math.radians(aug.rotation * (2.0 * u[4] - 1.0))
        flip = -1.0 if u[5] < aug.hflip else 1.0
        bright = 1.0 + aug.brightness * (2.0 * u[6] - 1.0)
        contrast = 1.0 + aug.contrast * (2.0 * u[7] - 1.0)
        erase = 1.0 if u[8] < aug.erasing else 0.0
        e_area = _ERASE_SCALE[0] + (_ERASE_SCALE[1] - _ERASE_SCALE[0]) * u[9]
        e_ratio = math.exp(log_erase[0] + (log_erase[1] - log_erase[0]) * u[10])
        eh = min(1.0, math.sqrt(e_area * e_ratio))
        ew = min(1.0, math.sqrt(e_area / e_ratio))
        ex0 = (1.0 - ew) * u[11]
        ey0 = (1.0 - eh) * u[12]
        out[i] = (w, h, cx, cy, angle, flip, bright, contrast, erase, ex0, ey0, ex0 + ew, ey0 + eh)
    return torch.from_numpy(out)


class BatchAugment:
    """Applies :func:`draw_params` rows to a uint8 (N, C, H, W) batch on its own device and
    returns the normalised float batch at ``image_size``."""

    def __init__(
        self,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        channels: int,
        erasing: bool = False,
    ) -> None:
        self.image_size = int(image_size)
        self.erasing = erasing  # from the config, so the data never needs a device sync
        self.channels = int(channels)
        self._luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        self.mean = torch.tensor([float(m) for m in mean], dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor([float(s) for s in std], dtype=torch.float32).view(1, -1, 1, 1)
        if self.mean.shape[1] not in (1, channels) or self.std.shape[1] not in (1, channels):
            raise ValueError(f"data.mean/std need 1 or {channels} values")
        self._on: dict[torch.device, dict[str, torch.Tensor]] = {}

    def _constants(self, device: torch.device) -> dict[str, torch.Tensor]:
        """luma weights, mean, std and the output's pixel centres on ``device``: copied there
        once, not on every training step."""
        if device not in self._on:
            s = self.image_size
            coords = (torch.arange(s, dtype=torch.float32) + 0.5) / s
            self._on[device] = {
                k: v.to(device)
                for k, v in (
                    ("luma", self._luma), ("mean", self.mean), ("std", self.std),
                    ("coords", coords.view(1, s)),
                )
            }  # fmt: skip
        return self._on[device]

    def __call__(self, images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) images as stored (C = 1 or 3) -> float (N, channels, S, S)."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                f"expected a uint8 (N, 1|3, H, W) batch, got {images.dtype} {tuple(images.shape)}"
            )
        const = self._constants(images.device)
        p = params.to(device=images.device, dtype=torch.float32)
        n = images.shape[0]
        x = images.float().div_(255.0)
        if x.shape[1] == 3 and self.channels == 1:  # luminance first: 1/3 of the work after
            x = (x * const["luma"]).sum(dim=1, keepdim=True)
        x = F.grid_sample(
            x, self._grid(p, n, const["coords"]), mode="bilinear", padding_mode="zeros",
            align_corners=False,
        )  # fmt: skip
        x = x.mul_(p[:, 6].view(n, 1, 1, 1)).clamp_(0.0, 1.0)  # brightness
        gray = x.mean(dim=(1, 2, 3), keepdim=True)
        x = x.sub_(gray).mul_(p[:, 7].view(n, 1, 1, 1)).add_(gray).clamp_(0.0, 1.0)  # contrast
        if x.shape[1] == 1 and self.channels == 3:  # gray source, RGB model: expand last
            x = x.expand(n, 3, *x.shape[2:])
        x = (x - const["mean"]) / const["std"]
        if self.erasing:
            coords = const["coords"]
            inside_x = (coords >= p[:, 9:10]) & (coords < p[:, 11:12])
            inside_y = (coords >= p[:, 10:11]) & (coords < p[:, 12:13])
            box = inside_y.unsqueeze(2) & inside_x.unsqueeze(1) & (p[:, 8:9] > 0).unsqueeze(2)
            x = x.masked_fill_(box.unsqueeze(1), 0.0)
        return x

    def _grid(self, p: torch.Tensor, n: int, coords: torch.Tensor) -> torch.Tensor:
        """The sampling grid of ``F.affine_grid`` (align_corners=False) for the per-sample
        crop + rotation + flip, built by broadcasting (several times faster on the CPU)."""
        s = self.image_size
        xs = coords.view(1, 1, s) * 2.0 - 1.0
        ys = xs.view(1, s, 1)
        cos, sin = torch.cos(p[:, 4]).view(n, 1, 1), torch.sin(p[:, 4]).view(n, 1, 1)
        sx, sy = (p[:, 0] * p[:, 5]).view(n, 1, 1), p[:, 1].view(n, 1, 1)
        cx, cy = p[:, 2].view(n, 1, 1), p[:, 3].view(n, 1, 1)
        grid = torch.empty(n, s, s, 2, device=p.device)
        torch.add(sx * cos * xs, -sy * sin * ys + cx, out=grid[..., 0])
        torch.add(sx * sin * xs, sy * cos * ys + cy, out=grid[..., 1])
        return grid
