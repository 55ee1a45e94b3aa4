"""EmoNet (Toisoul et al., Nature Machine Intelligence 2021): the distillation teacher.

This is an independent re-implementation written for fersuite. It reproduces the layer
layout and parameter names of the official network so that the published checkpoints
(``emonet_8.pth`` / ``emonet_5.pth``) load with ``strict=True``, but shares no code with the
official repository (whose licence, CC BY-NC-ND 4.0, forbids derivatives; the *weights*
remain under that licence and are never shipped with fersuite).

Architecture, as a summary of the published model:

* A FAN face-alignment trunk: 7x7/2 convolution (with bias) + BatchNorm + ReLU, the residual
  "ConvBlocks" ``conv2`` (64->128, followed by a 2x2 max-pool), ``conv3`` (128->128) and
  ``conv4`` (128->256), then two stacked depth-4 hourglasses. Each stack ends with
  ``top_m_i`` -> ``conv_last_i`` (1x1) -> ``bn_end_i`` -> ReLU and a 1x1 landmark head ``l_i``
  producing 68 heatmaps; between stacks ``bl_i`` / ``al_i`` re-inject features and heatmaps.
* The emotion branch: the features of every stack are concatenated, multiplied by the sum of
  the last stack's 68 heatmaps (an attention mask), concatenated with the trunk features
  (output of ``conv4``), reduced by a 1x1 convolution and processed by four ConvBlocks each
  followed by a 2x2 max-pool, globally averaged and fed to a small MLP that predicts
  ``num_expressions`` logits followed by valence and arousal.

All normalisation layers are BatchNorm (the official code aliases InstanceNorm to BatchNorm).
Input: 256x256 RGB in [0, 1], no mean/std normalisation.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fersuite.types import AffectOutput, InputSpec

__all__ = ["ConvBlock", "EmoNet", "HourGlass", "load_emonet_weights"]

log = logging.getLogger(__name__)

NUM_LANDMARKS = 68
_FEATURES = 256


def _conv3x3(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=1, padding=1, bias=False)


class ConvBlock(nn.Module):
    """FAN pre-activation residual block with hierarchical multi-scale branches.

    Three chained BN-ReLU-3x3 convolutions produce ``out/2``, ``out/4`` and ``out/4``
    channels; their outputs are concatenated (``out`` channels) and added to the input,
    which is projected by BN-ReLU-1x1 (``downsample``) when the widths differ.
    """

    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__()
        half, quarter = out_planes // 2, out_planes // 4
        if half + 2 * quarter != out_planes:
            raise ValueError(f"ConvBlock needs out_planes divisible by 4, got {out_planes}")
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = _conv3x3(in_planes, half)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv2 = _conv3x3(half, quarter)
        self.bn3 = nn.BatchNorm2d(quarter)
        self.conv3 = _conv3x3(quarter, quarter)
        self.downsample: nn.Module | None = None
        if in_planes != out_planes:
            # indices 0 (BN) and 2 (conv) are part of the checkpoint's key names
            self.downsample = nn.Sequential(
                nn.BatchNorm2d(in_planes),
                nn.ReLU(inplace=True),
                nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=1, bias=False),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.conv1(F.relu(self.bn1(x)))
        b2 = self.conv2(F.relu(self.bn2(b1)))
        b3 = self.conv3(F.relu(self.bn3(b2)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.cat((b1, b2, b3), dim=1) + shortcut


class HourGlass(nn.Module):
    """Recursive hourglass of ConvBlocks; sub-modules are named ``b1_<level>``,
    ``b2_<level>``, ``b3_<level>`` and (deepest level only) ``b2_plus_1``."""

    def __init__(self, depth: int = 4, features: int = _FEATURES) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"HourGlass depth must be >= 1, got {depth}")
        self.depth = depth
        # Registration order mirrors the official recursion so state_dict orders agree too.
        for level in range(depth, 0, -1):
            self.add_module(f"b1_{level}", ConvBlock(features, features))
            self.add_module(f"b2_{level}", ConvBlock(features, features))
        self.add_module("b2_plus_1", ConvBlock(features, features))
        for level in range(1, depth + 1):
            self.add_module(f"b3_{level}", ConvBlock(features, features))

    def _block(self, name: str) -> nn.Module:
        return self._modules[name]  # type: ignore[return-value]

    def _level(self, level: int, x: torch.Tensor) -> torch.Tensor:
        upper = self._block(f"b1_{level}")(x)
        lower = self._block(f"b2_{level}")(F.max_pool2d(x, 2, stride=2))
        inner = self._level(level - 1, lower) if level > 1 else self._block("b2_plus_1")(lower)
        lower = self._block(f"b3_{level}")(inner)
        return upper + F.interpolate(lower, scale_factor=2.0, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._level(self.depth, x)


class EmoNet(nn.Module):
    """EmoNet with a (by default frozen) FAN face-alignment trunk and an emotion branch.

    Args:
        num_expressions: expression classes of the checkpoint (8 or 5 for the official ones).
        num_stacks: stacked hourglasses (2 in the official model).
        num_emo_blocks: ConvBlock + max-pool stages of the emotion branch (4 officially).
        attention: multiply the hourglass features by the summed heatmaps (official: True);
            otherwise the heatmaps are concatenated to the features instead.
        freeze_trunk: freeze the face-alignment trunk (no gradients, BatchNorms kept in eval
            mode even under ``model.train()``), as done when training the official model.
        pretrained_path: optional official ``.pth`` loaded with :func:`load_emonet_weights`.

    ``forward`` returns an :class:`AffectOutput` with valence/arousal clamped to [-1, 1]
    (as in the official evaluation); :meth:`forward_raw` leaves them unbounded and
    :meth:`forward_with_heatmaps` also returns the 68 landmark heatmaps (B, 68, H/4, W/4).
    The spatial size must be a multiple of 64 (256 for the official weights).
    """

    TRUNK_PREFIXES: tuple[str, ...] = ("conv1", "bn1", "conv2", "conv3", "conv4")

    def __init__(
        self,
        num_expressions: int = 8,
        num_stacks: int = 2,
        num_emo_blocks: int = 4,
        attention: bool = True,
        freeze_trunk: bool = True,
        pretrained_path: str | Path | None = None,
        num_classes: int | None = None,
        in_chans: int = 3,
        input_size: int = 256,
    ) -> None:
        super().__init__()
        # ``num_classes`` / ``in_chans`` / ``input_size``: the zoo's uniform constructor keys.
        if num_classes is not None:
            num_expressions = num_classes
        if in_chans != 3:
            raise ValueError(f"EmoNet takes RGB input (model.in_chans=3), got in_chans={in_chans}")
        if input_size <= 0 or input_size % 64:
            raise ValueError(
                f"EmoNet needs model.input_size as a multiple of 64 (256 for the official "
                f"weights), got {input_size}"
            )
        if num_expressions <= 0 or num_stacks <= 0 or num_emo_blocks <= 0:
            raise ValueError(
                "EmoNet needs positive num_expressions, num_stacks and num_emo_blocks, got "
                f"{num_expressions}, {num_stacks}, {num_emo_blocks}"
            )
        self.num_classes = num_expressions
        self.num_stacks = num_stacks
        self.attention = attention
        self.num_features = _FEATURES
        self.input_spec = InputSpec(
            size=input_size, channels=3, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)
        )

        # --- face-alignment (FAN) trunk ---
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = ConvBlock(64, 128)
        self.conv3 = ConvBlock(128, 128)
        self.conv4 = ConvBlock(128, _FEATURES)
        trunk_names = list(self.TRUNK_PREFIXES)
        for i in range(num_stacks):
            stack: dict[str, nn.Module] = {
                f"m{i}": HourGlass(4, _FEATURES),
                f"top_m_{i}": ConvBlock(_FEATURES, _FEATURES),
                f"conv_last{i}": nn.Conv2d(_FEATURES, _FEATURES, kernel_size=1),
                f"bn_end{i}": nn.BatchNorm2d(_FEATURES),
                f"l{i}": nn.Conv2d(_FEATURES, NUM_LANDMARKS, kernel_size=1),
            }
            if i < num_stacks - 1:
                stack[f"bl{i}"] = nn.Conv2d(_FEATURES, _FEATURES, kernel_size=1)
                stack[f"al{i}"] = nn.Conv2d(NUM_LANDMARKS, _FEATURES, kernel_size=1)
            for name, module in stack.items():
                self.add_module(name, module)
                trunk_names.append(name)
        self._trunk_names: tuple[str, ...] = tuple(trunk_names)

        # --- emotion branch ---
        emo_in = _FEATURES * (num_stacks + 1) + (0 if attention else NUM_LANDMARKS)
        self.conv1x1_input_emo_2 = nn.Conv2d(emo_in, _FEATURES, kernel_size=1)
        emo_layers: list[nn.Module] = []
        for _ in range(num_emo_blocks):
            emo_layers += [ConvBlock(_FEATURES, _FEATURES), nn.MaxPool2d(2, 2)]
        self.emo_net_2 = nn.Sequential(*emo_layers)
        self.emo_fc_2 = nn.Sequential(
            nn.Linear(_FEATURES, 128),
            nn.BatchNorm1d(128),
            nn.ReLU(inplace=True),
            nn.Linear(128, num_expressions + 2),
        )

        self.freeze_trunk = False
        if pretrained_path is not None:
            load_emonet_weights(self, pretrained_path)
        self.set_trunk_frozen(freeze_trunk)

    # ------------------------------------------------------------------ trunk management
    def trunk_modules(self) -> Iterator[nn.Module]:
        """The face-alignment modules (everything before ``conv1x1_input_emo_2``)."""
        for name in self._trunk_names:
            yield self._modules[name]  # type: ignore[misc]

    def trunk_parameters(self) -> Iterator[nn.Parameter]:
        for module in self.trunk_modules():
            yield from module.parameters()

    def set_trunk_frozen(self, frozen: bool = True) -> None:
        """(Un)freeze the face-alignment trunk: gradients off and BatchNorms in eval mode."""
        self.freeze_trunk = frozen
        for p in self.trunk_parameters():
            p.requires_grad_(not frozen)
        if frozen:
            self._set_trunk_eval()
        else:
            for module in self.trunk_modules():
                module.train(self.training)

    def _set_trunk_eval(self) -> None:
        for module in self.trunk_modules():
            module.eval()

    def train(self, mode: bool = True) -> EmoNet:
        super().train(mode)
        if self.freeze_trunk:
            self._set_trunk_eval()
        return self

    # ------------------------------------------------------------------------ forward
    def _check_input(self, x: torch.Tensor) -> None:
        if torch.jit.is_tracing():  # shapes are symbolic while tracing
            return
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"EmoNet expects (B, 3, H, W) RGB input, got {tuple(x.shape)}")
        if x.shape[-1] % 64 or x.shape[-2] % 64:
            raise ValueError(f"EmoNet needs H and W divisible by 64, got {tuple(x.shape[-2:])}")

    def _trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (trunk features from conv4, concatenated stack features, last heatmaps)."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(self.conv2(x), 2, stride=2)
        x = self.conv4(self.conv3(x))
        previous = x
        stack_features: list[torch.Tensor] = []
        heatmaps = x.new_empty(0)
        for i in range(self.num_stacks):
            ll = getattr(self, f"top_m_{i}")(getattr(self, f"m{i}")(previous))
            ll = F.relu(getattr(self, f"bn_end{i}")(getattr(self, f"conv_last{i}")(ll)))
            heatmaps = getattr(self, f"l{i}")(ll)
            if i < self.num_stacks - 1:
                ll = getattr(self, f"bl{i}")(ll)
                previous = previous + ll + getattr(self, f"al{i}")(heatmaps)
            stack_features.append(ll)
        return x, torch.cat(stack_features, dim=1), heatmaps

    def _features_and_heatmaps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_input(x)
        trunk, stacks, heatmaps = self._trunk(x)
        if self.attention:
            mask = heatmaps.sum(dim=1, keepdim=True)
            emo = torch.cat((trunk, stacks * mask), dim=1)
        else:
            emo = torch.cat((trunk, stacks, heatmaps), dim=1)
        feats = self.emo_net_2(self.conv1x1_input_emo_2(emo))
        return feats, heatmaps

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Emotion-branch feature map (B, 256, H/64, W/64)."""
        return self._features_and_heatmaps(x)[0]

    def forward_head_raw(self, feats: torch.Tensor) -> torch.Tensor:
        """Feature map -> (B, num_classes + 2) raw outputs (logits, valence, arousal)."""
        pooled = F.adaptive_avg_pool2d(feats, 1).flatten(1)
        return self.emo_fc_2(pooled)

    def forward_head(
        self, feats: torch.Tensor, pre_logits: bool = False, clamp_va: bool = True
    ) -> AffectOutput | torch.Tensor:
        if pre_logits:
            return F.adaptive_avg_pool2d(feats, 1).flatten(1)
        return self._to_affect(self.forward_head_raw(feats), clamp_va)

    def _to_affect(self, out: torch.Tensor, clamp_va: bool) -> AffectOutput:
        c = self.num_classes
        valence, arousal = out[:, c], out[:, c + 1]
        if clamp_va:
            valence, arousal = valence.clamp(-1.0, 1.0), arousal.clamp(-1.0, 1.0)
        return AffectOutput(out[:, :c], valence, arousal)

    def forward_with_heatmaps(
        self, x: torch.Tensor, clamp_va: bool = True
    ) -> tuple[AffectOutput, torch.Tensor]:
        """Prediction plus the last stack's 68 landmark heatmaps (B, 68, H/4, W/4)."""
        feats, heatmaps = self._features_and_heatmaps(x)
        return self._to_affect(self.forward_head_raw(feats), clamp_va), heatmaps

    def forward_raw(self, x: torch.Tensor) -> AffectOutput:
        """Prediction with the unbounded valence/arousal of the official network."""
        return self.forward_with_heatmaps(x, clamp_va=False)[0]

    def forward(self, x: torch.Tensor) -> AffectOutput:
        return self.forward_with_heatmaps(x, clamp_va=True)[0]


# ---------------------------------------------------------------------------- weights
def _extract_state_dict(obj: object) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                obj = inner
                break
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return {str(k): v for k, v in obj.items()}
    raise ValueError(f"expected a state_dict (mapping of name -> tensor), got {type(obj)!r}")


def _describe_mismatch(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], limit: int = 10
) -> str | None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or shapes):
        return None
    parts = []
    for label, items in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", shapes),
    ):
        if items:
            more = f" ... (+{len(items) - limit} more)" if len(items) > limit else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:limit])}{more}")
    return "; ".join(parts)


def load_emonet_weights(model: EmoNet, path: str | Path) -> EmoNet:
    """Load an official EmoNet checkpoint (``emonet_8.pth`` / ``emonet_5.pth``) strictly.

    The file is read with ``torch.load(weights_only=True)``; a ``module.`` prefix (from
    ``DataParallel``) is stripped and BatchNorm ``num_batches_tracked`` buffers absent from
    old checkpoints are filled in. Raises :class:`ValueError` naming the first missing /
    unexpected keys and shape mismatches when the checkpoint does not fit ``model``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"EmoNet checkpoint not found: {path}")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    state_dict = _extract_state_dict(raw)
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    for key, value in model.state_dict().items():
        if key.endswith(".num_batches_tracked") and key not in state_dict:
            prefix = key.removesuffix("num_batches_tracked")
            if f"{prefix}running_mean" in state_dict:
                state_dict[key] = torch.zeros_like(value)
    problem = _describe_mismatch(model, state_dict)
    if problem is not None:
        raise ValueError(
            f"{path} does not match EmoNet(num_expressions={model.num_classes}): {problem}"
        )
    model.load_state_dict(state_dict, strict=True)
    log.info("loaded EmoNet weights from %s", path)
    return model
