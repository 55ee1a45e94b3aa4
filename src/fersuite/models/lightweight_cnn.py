"""Lightweight FER CNN: Inception stem + MobileNetV2 bottlenecks + CNN expansion block.

Follows the design of the 2019 lightweight facial-expression-recognition network:

1. an Inception-style stem extracts multi-scale features at full resolution with four
   parallel branches (1x1; 3x3; "5x5" as two stacked 3x3; 3x3 max-pool followed by 1x1),
   each convolution followed by BatchNorm + ReLU, concatenated along channels;
2. MobileNetV2 inverted-residual bottlenecks (1x1 expansion, 3x3 depthwise, linear 1x1
   projection, residual when shapes allow) compress the features with strides;
3. a "CNN expansion block" (1x1 convolution widening the channels + BN + ReLU6) widens the
   learned representation before
4. global average pooling, dropout and the fully connected joint expression/VA head.

At 48x48 grayscale with the defaults the network has ~0.64 M parameters and ~38 MMACs (fvcore).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from fersuite.models.heads import JointHead
from fersuite.types import AffectOutput, InputSpec

__all__ = [
    "DEFAULT_BOTTLENECKS",
    "ConvBNAct",
    "InceptionStem",
    "InvertedResidual",
    "LightweightCNN",
]

log = logging.getLogger(__name__)

# MobileNetV2-style settings: (expansion ratio t, output channels c, repeats n, stride s).
# The total stride is 16, so a 48x48 input ends on a 3x3 map.
DEFAULT_BOTTLENECKS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 3, 2),
    (6, 96, 2, 1),
    (6, 160, 1, 2),
)


def _make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to a multiple of ``divisor`` without dropping more than 10%."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvBNAct(nn.Sequential):
    """``Conv2d -> BatchNorm2d [-> activation]``: the children (and state_dict keys ``0.*``,
    ``1.*``) of the plain ``nn.Sequential`` it replaces.

    In eval mode the BatchNorm is folded into the convolution on the fly (one convolution with
    scaled weights and a bias instead of a convolution plus a normalisation pass over its output;
    same result up to float rounding, differentiable). Under ``torch.jit`` tracing (fvcore's MAC
    count, the legacy ONNX exporter, which folds BatchNorm itself) and under ``torch.export`` /
    ``torch.compile`` (the dynamo ONNX exporter, ExecuTorch and its PT2E quantisation, which need
    the weights as constants and fold BatchNorm themselves) it runs unfolded.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn = self[0], self[1]
        if (
            self.training
            or not bn.track_running_stats
            or torch.jit.is_tracing()
            or torch.compiler.is_compiling()  # torch.export / compile: the plain graph
        ):
            return super().forward(x)
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        bias = bn.bias - bn.running_mean * scale
        if conv.bias is not None:
            bias = bias + conv.bias * scale
        weight = conv.weight * scale.reshape(-1, 1, 1, 1)
        out = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        for act in list(self)[2:]:
            out = act(out)
        return out


def _conv_bn_act(
    in_ch: int,
    out_ch: int,
    kernel_size: int,
    stride: int = 1,
    groups: int = 1,
    act: type[nn.Module] | None = nn.ReLU,
) -> ConvBNAct:
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if act is not None:
        layers.append(act(inplace=True))
    return ConvBNAct(*layers)


class InceptionStem(nn.Module):
    """Four parallel branches (1x1 / 3x3 / 5x5 as 2x3x3 / max-pool + 1x1), concatenated.

    The output has ``sum(branch_channels)`` channels at the input resolution.
    """

    def __init__(self, in_chans: int, branch_channels: Sequence[int]) -> None:
        super().__init__()
        if len(branch_channels) != 4 or min(branch_channels) <= 0:
            raise ValueError(f"need 4 positive branch widths, got {tuple(branch_channels)}")
        c1, c3, c5, cp = branch_channels
        self.branch1x1 = _conv_bn_act(in_chans, c1, 1)
        self.branch3x3 = _conv_bn_act(in_chans, c3, 3)
        self.branch5x5 = nn.Sequential(_conv_bn_act(in_chans, c5, 3), _conv_bn_act(c5, c5, 3))
        self.branch_pool = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1), _conv_bn_act(in_chans, cp, 1)
        )
        self.out_channels = c1 + c3 + c5 + cp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch1x1(x), self.branch3x3(x), self.branch5x5(x), self.branch_pool(x))
        if torch.jit.is_tracing() or torch.jit.is_scripting():
            return torch.cat(branches, dim=1)
        # Concatenated straight into channels-last (NHWC) memory: every later convolution then
        # runs on NHWC activations, which oneDNN computes without converting its input and output
        # (several times faster for the depthwise convolutions on CPU); values are unchanged.
        if torch.is_grad_enabled():  # cat(out=...) is not differentiable
            return torch.cat(branches, dim=1).contiguous(memory_format=torch.channels_last)
        b, _, h, w = branches[0].shape
        ref = branches[0]
        out = torch.empty(
            (b, self.out_channels, h, w),
            dtype=ref.dtype,
            device=ref.device,
            memory_format=torch.channels_last,
        )
        return torch.cat(branches, dim=1, out=out)


class InvertedResidual(nn.Module):
    """MobileNetV2 bottleneck: [1x1 expand + BN + ReLU6] -> 3x3 depthwise + BN + ReLU6 ->
    1x1 linear projection + BN, with an identity shortcut when stride 1 and widths match."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: float) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = round(in_ch * expand_ratio)
        self.use_residual = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_act(in_ch, hidden, 1, act=nn.ReLU6))
        layers += [
            _conv_bn_act(hidden, hidden, 3, stride=stride, groups=hidden, act=nn.ReLU6),
            _conv_bn_act(hidden, out_ch, 1, act=None),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class LightweightCNN(nn.Module):
    """Inception stem + MobileNetV2 bottlenecks + expansion block + joint head.

    Args:
        num_classes: expression classes.
        in_chans: input channels (1 for grayscale FER2013-style crops, 3 for RGB).
        input_size: expected square input side (any size >= 32 works; 48..224 tested).
        width_mult: scales the stem and bottleneck widths (rounded to multiples of 8).
        expansion_channels: output width of the CNN expansion block (the pooled feature
            size ``num_features``); scaled by ``width_mult`` only when left as ``None``
            (default 640 at width 1.0).
        drop_rate: dropout before the fully connected head.
        pretrained_path: optional checkpoint (plain or Lightning ``state_dict``) to load
            strictly.
    """

    def __init__(
        self,
        num_classes: int = 8,
        in_chans: int = 1,
        input_size: int = 48,
        width_mult: float = 1.0,
        expansion_channels: int | None = None,
        drop_rate: float = 0.2,
        pretrained_path: str | Path | None = None,
        bottlenecks: Sequence[tuple[int, int, int, int]] = DEFAULT_BOTTLENECKS,
    ) -> None:
        super().__init__()
        if num_classes <= 0 or in_chans <= 0 or width_mult <= 0:
            raise ValueError(
                "LightweightCNN needs positive num_classes, in_chans and width_mult, got "
                f"{num_classes}, {in_chans}, {width_mult}"
            )
        if input_size < 32:
            raise ValueError(f"input_size must be >= 32, got {input_size}")
        self.num_classes = num_classes
        self.input_spec = InputSpec(
            size=input_size, channels=in_chans, mean=(0.5,) * in_chans, std=(0.5,) * in_chans
        )

        stem_branches = [_make_divisible(8 * width_mult) for _ in range(4)]
        self.stem = InceptionStem(in_chans, stem_branches)
        channels = self.stem.out_channels

        blocks: list[nn.Module] = []
        for t, c, n, s in bottlenecks:
            out_ch = _make_divisible(c * width_mult)
            for i in range(n):
                blocks.append(InvertedResidual(channels, out_ch, s if i == 0 else 1, t))
                channels = out_ch
        self.blocks = nn.Sequential(*blocks)

        if expansion_channels is None:
            expansion_channels = _make_divisible(640 * max(1.0, width_mult))
        if expansion_channels <= 0:
            raise ValueError(f"expansion_channels must be positive, got {expansion_channels}")
        # CNN expansion block: widen the compressed features with a 1x1 convolution.
        self.expansion = _conv_bn_act(channels, expansion_channels, 1, act=nn.ReLU6)
        self.num_features = expansion_channels

        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.head = JointHead(expansion_channels, num_classes, dropout=drop_rate)

        self._init_weights()
        if pretrained_path is not None:
            self.load_pretrained(pretrained_path)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He init over the true fan-out (k*k*out/groups). nn.init.kaiming_normal_
                # ignores groups, which made the depthwise kernels sqrt(channels) times too
                # small (std 0.02 instead of 0.47 at 576 channels): harmless in the forward pass
                # (BatchNorm follows) but Adam's scale-free steps then grow them by ~10% a step,
                # the BatchNorm running statistics lag behind and eval-mode outputs collapse to
                # a constant for the first epochs (issue 16).
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def load_pretrained(self, path: str | Path) -> None:
        """Strictly load weights saved from this class (plain, DataParallel or Lightning)."""
        raw = torch.load(Path(path), map_location="cpu", weights_only=True)
        if isinstance(raw, Mapping) and isinstance(raw.get("state_dict"), Mapping):
            raw = raw["state_dict"]
        if not isinstance(raw, Mapping):
            raise ValueError(f"{path} does not hold a state_dict (got {type(raw)!r})")
        state_dict = {str(k): v for k, v in raw.items()}
        expected = self.state_dict().keys()
        for prefix in ("module.", "model.", "net."):
            if not (state_dict.keys() & expected) and all(k.startswith(prefix) for k in state_dict):
                state_dict = {k.removeprefix(prefix): v for k, v in state_dict.items()}
        missing = [k for k in expected if k not in state_dict]
        unexpected = [k for k in state_dict if k not in expected]
        shapes = [
            k
            for k, v in self.state_dict().items()
            if k in state_dict and state_dict[k].shape != v.shape
        ]
        if missing or unexpected or shapes:
            raise ValueError(
                f"{path} does not match LightweightCNN: missing {missing[:10]}, "
                f"unexpected {unexpected[:10]}, shape mismatches {shapes[:10]}"
            )
        self.load_state_dict(state_dict, strict=True)
        log.info("loaded LightweightCNN weights from %s", path)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, num_features, H/16, W/16)."""
        return self.expansion(self.blocks(self.stem(x)))

    def forward_head(
        self, feats: torch.Tensor, pre_logits: bool = False
    ) -> AffectOutput | torch.Tensor:
        pooled = self.global_pool(feats).flatten(1)
        return pooled if pre_logits else self.head(pooled)

    def forward(self, x: torch.Tensor) -> AffectOutput:
        pooled = self.global_pool(self.forward_features(x)).flatten(1)
        return self.head(pooled)
