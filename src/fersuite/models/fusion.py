"""Cheap multi-scale fusion of hierarchical feature maps (used by MiT-FER).

Every stage map is projected to ``fusion_dim`` channels by a 1x1 conv + BatchNorm and resampled
to the grid of the stage whose stride is ``fusion_stride``: finer maps are average-pooled
*before* projection and coarser maps are bilinearly upsampled *after* it, so that every 1x1
conv runs on the smaller of the two grids. The aligned maps are concatenated, optionally
re-weighted by a squeeze-and-excitation gate over the concatenated channels (a per-sample,
per-channel choice of which scales matter), and merged by a 1x1 conv + BatchNorm + GELU.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MultiScaleFusion", "ScaleGate"]


class ScaleGate(nn.Module):
    """Squeeze-and-excitation gate: GAP -> 1x1 conv -> GELU -> 1x1 conv -> sigmoid -> scale."""

    def __init__(self, channels: int, reduction: int = 8, min_hidden: int = 16) -> None:
        super().__init__()
        hidden = max(min_hidden, channels // reduction)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.act = nn.GELU()
        self.expand = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.expand(self.act(self.reduce(x.mean(dim=(2, 3), keepdim=True))))
        return x * torch.sigmoid(w)


def _grid(x: torch.Tensor) -> tuple[int, int]:
    """The (H, W) grid of ``x`` as plain ints. Traced (legacy ONNX exporter, TorchScript), the
    resampling sizes are then constants of the graph, whose input size is fixed anyway (only
    the batch axis is dynamic): the legacy exporter writes adaptive pooling with a constant
    output size as ``AveragePool``, and cannot write it with a size computed at run time."""
    if not torch.jit.is_tracing():
        return int(x.shape[-2]), int(x.shape[-1])
    with warnings.catch_warnings():  # "converting a tensor to a Python integer": intended
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return int(x.shape[-2]), int(x.shape[-1])


class MultiScaleFusion(nn.Module):
    """Fuse NCHW maps into one ``fusion_dim`` map on the grid of the ``fusion_stride`` map.

    ``strides`` gives the stride of every input map; ``fusion_stride`` must be one of them. The
    output grid is the grid of that input map, so odd input sizes (rounded-up stage sizes) work.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int] = (4, 8, 16, 32),
        fusion_dim: int = 128,
        fusion_stride: int = 16,
        gate: bool = True,
        gate_reduction: int = 8,
    ) -> None:
        super().__init__()
        if len(in_channels) != len(strides):
            raise ValueError(f"{len(in_channels)} input widths but {len(strides)} strides")
        if fusion_stride not in strides:
            raise ValueError(f"fusion_stride {fusion_stride} is not one of the strides {strides}")
        if fusion_dim <= 0:
            raise ValueError(f"fusion_dim must be positive, got {fusion_dim}")
        self.in_channels = tuple(in_channels)
        self.strides = tuple(strides)
        self.fusion_dim = fusion_dim
        self.fusion_stride = fusion_stride
        self.target_index = self.strides.index(fusion_stride)
        self.proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, fusion_dim, 1, bias=False), nn.BatchNorm2d(fusion_dim))
            for c in self.in_channels
        )
        concat = fusion_dim * len(self.in_channels)
        self.gate = ScaleGate(concat, gate_reduction) if gate else nn.Identity()
        self.fuse = nn.Sequential(
            nn.Conv2d(concat, fusion_dim, 1, bias=False),
            nn.BatchNorm2d(fusion_dim),
            nn.GELU(),
        )
        self.out_channels = fusion_dim

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(feats) != len(self.proj):
            raise ValueError(f"expected {len(self.proj)} feature maps, got {len(feats)}")
        size = _grid(feats[self.target_index])
        aligned = []
        for i, (x, proj) in enumerate(zip(feats, self.proj, strict=True)):
            if i < self.target_index:  # finer grid: pool first, then project (cheaper)
                x = proj(F.adaptive_avg_pool2d(x, size))
            elif i > self.target_index:  # coarser grid: project first, then upsample
                x = F.interpolate(proj(x), size=size, mode="bilinear", align_corners=False)
            else:
                x = proj(x)
            aligned.append(x)
        return self.fuse(self.gate(torch.cat(aligned, dim=1)))
