"""MiT-FER: a Mix Transformer encoder with multi-scale fusion for facial expression recognition."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fersuite.models.fusion import MultiScaleFusion
from fersuite.models.heads import JointHead
from fersuite.models.mit import MixTransformer, load_segformer_weights
from fersuite.types import AffectOutput, InputSpec

__all__ = ["FUSION_MODES", "MiTFER"]

FUSION_MODES = ("multiscale", "last")


class MiTFER(nn.Module):
    """MiT encoder -> fusion -> global average pooling -> :class:`JointHead`.

    ``fusion="multiscale"`` merges the four stage maps with :class:`MultiScaleFusion` on the
    ``fusion_stride`` grid (``num_features = fusion_dim``); ``fusion="last"`` is the ablation
    that keeps only the last stage map, as a plain MiT classifier does
    (``num_features = widths[-1]``). ``pretrained_path`` loads ImageNet MiT weights into the
    encoder (NVlabs or Hugging Face layout); the RGB stem is adapted to ``in_chans``.
    """

    def __init__(
        self,
        num_classes: int = 8,
        variant: str = "b0",
        in_chans: int = 1,
        input_size: int = 48,
        fusion: str = "multiscale",
        fusion_dim: int = 128,
        fusion_stride: int = 16,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        pretrained_path: str | Path | None = None,
        fusion_gate: bool = True,
    ) -> None:
        super().__init__()
        if fusion not in FUSION_MODES:
            raise ValueError(f"unknown fusion {fusion!r}; choose from {FUSION_MODES}")
        self.num_classes = num_classes
        self.fusion_mode = fusion
        self.input_spec = InputSpec(
            size=input_size, channels=in_chans, mean=(0.5,) * in_chans, std=(0.5,) * in_chans
        )
        self.encoder = MixTransformer(variant, in_chans=in_chans, drop_path_rate=drop_path_rate)
        if pretrained_path is not None:
            load_segformer_weights(self.encoder, pretrained_path)
        self.fusion: MultiScaleFusion | None = None
        if fusion == "multiscale":
            self.fusion = MultiScaleFusion(
                self.encoder.widths,
                self.encoder.strides,
                fusion_dim=fusion_dim,
                fusion_stride=fusion_stride,
                gate=fusion_gate,
            )
            self.num_features = fusion_dim
        else:
            self.num_features = self.encoder.widths[-1]
        self.head = JointHead(self.num_features, num_classes, dropout=drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The fused feature map, (B, num_features, h, w)."""
        feats = self.encoder.forward_stages(x)
        if self.fusion is None:
            return feats[-1]
        return self.fusion(feats)

    def forward_head(
        self, feats: torch.Tensor, pre_logits: bool = False
    ) -> torch.Tensor | AffectOutput:
        """Global average pooling, then the joint head (or the pooled features)."""
        pooled = feats.mean(dim=(2, 3))
        if pre_logits:
            return pooled
        return self.head(pooled)

    def forward(self, x: torch.Tensor) -> AffectOutput:
        return self.head(self.forward_features(x).mean(dim=(2, 3)))
