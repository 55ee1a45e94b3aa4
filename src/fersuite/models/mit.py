"""Mix Transformer (MiT) encoder of SegFormer, written from scratch.

The encoder is a four-stage hierarchical transformer: every stage starts with an
overlapping patch embedding (a strided convolution + LayerNorm), runs a stack of blocks made of
efficient self-attention (keys and values spatially reduced by a strided convolution) and a
Mix-FFN (a 3x3 depthwise convolution between two linear layers), and ends with a LayerNorm.
It returns four NCHW feature maps at strides 4, 8, 16 and 32 (sizes rounded up).

Official ImageNet checkpoints in either the NVlabs layout (``patch_embed1.proj.weight``,
``block1.0.attn.kv.weight``...) or the Hugging Face layout
(``segformer.encoder.patch_embeddings.0.proj.weight``...) are loaded by
:func:`load_segformer_weights`; :func:`to_nvlabs_state_dict` and :func:`to_hf_state_dict` do the
inverse renaming.

Module names mirror the NVlabs code (``q``, ``kv``, ``proj``, ``sr``, ``norm``, ``fc1``,
``dwconv``, ``fc2``) so that converting a checkpoint is a matter of renaming keys, with one
exception: the Hugging Face layout stores keys and values as two matrices that are stacked
into the fused ``kv`` projection.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from timm.layers import DropPath, trunc_normal_
from torch import nn

__all__ = [
    "MIT_VARIANTS",
    "EfficientSelfAttention",
    "MiTBlock",
    "MiTStage",
    "MitVariant",
    "MixFFN",
    "MixTransformer",
    "OverlapPatchEmbed",
    "load_segformer_weights",
    "to_hf_state_dict",
    "to_nvlabs_state_dict",
]

STAGE_STRIDES: tuple[int, ...] = (4, 8, 16, 32)
_PATCH_SIZES: tuple[int, ...] = (7, 3, 3, 3)
_PATCH_STRIDES: tuple[int, ...] = (4, 2, 2, 2)
_SR_RATIOS: tuple[int, ...] = (8, 4, 2, 1)
_BLOCK_EPS = 1e-6  # norm1 / norm2 of the blocks and the stage-end norms (NVlabs code)


@dataclass(frozen=True)
class MitVariant:
    """Widths, depths and heads of one MiT size."""

    widths: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int] = (1, 2, 5, 8)


MIT_VARIANTS: dict[str, MitVariant] = {
    "b0": MitVariant((32, 64, 160, 256), (2, 2, 2, 2)),
    "b1": MitVariant((64, 128, 320, 512), (2, 2, 2, 2)),
    "b2": MitVariant((64, 128, 320, 512), (3, 4, 6, 3)),
    "b3": MitVariant((64, 128, 320, 512), (3, 4, 18, 3)),
    "b4": MitVariant((64, 128, 320, 512), (3, 8, 27, 3)),
    "b5": MitVariant((64, 128, 320, 512), (3, 6, 40, 3)),
}


def _tokens_to_map(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, N, C) tokens -> (B, C, H, W) map."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)


class OverlapPatchEmbed(nn.Module):
    """Strided convolution with ``padding = patch // 2`` + LayerNorm; returns tokens and size.

    The output side is ``ceil(side / stride)`` for the odd patch sizes used by MiT.
    """

    def __init__(self, in_chans: int, dim: int, patch_size: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        h, w = x.shape[-2], x.shape[-1]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class EfficientSelfAttention(nn.Module):
    """Multi-head self-attention whose keys/values come from a spatially reduced sequence.

    With ``sr_ratio > 1`` the token map is reduced by a ``sr x sr`` convolution of stride ``sr``
    followed by a LayerNorm before projecting keys and values. Maps whose side is not a multiple
    of ``sr`` are zero-padded at the bottom/right first (ceil mode), so that no token is dropped
    and inputs of any size work; at sizes that divide evenly (e.g. 224) this is the original op.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        sr_ratio: int = 1,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.sr_ratio = sr_ratio
        self.attn_drop = attn_drop
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)  # rows [:dim] keys, [dim:] values
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.sr: nn.Module | None = None
        self.norm: nn.Module | None = None
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def _reduce(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        if self.sr is None or self.norm is None:
            return x
        r = self.sr_ratio
        x = _tokens_to_map(x, h, w)
        # Zero-pad bottom/right up to a multiple of r (a no-op when r divides the size); no
        # branch on the size, so that traced graphs carry no Python-side decision.
        x = F.pad(x, (0, (r - w % r) % r, 0, (r - h % r) % r))
        x = self.sr(x).flatten(2).transpose(1, 2)
        return self.norm(x)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        q = self.q(x).reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        kv = self.kv(self._reduce(x, h, w))
        kv = kv.reshape(b, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        drop = self.attn_drop if self.training else 0.0
        out = F.scaled_dot_product_attention(q, kv[0], kv[1], dropout_p=drop)
        out = out.transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(out))


class MixFFN(nn.Module):
    """Linear -> 3x3 depthwise conv -> GELU -> Linear (the conv leaks positional information)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = self.fc1(x)
        x = self.dwconv(_tokens_to_map(x, h, w)).flatten(2).transpose(1, 2)
        x = self.drop(self.act(x))
        return self.drop(self.fc2(x))


class MiTBlock(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        sr_ratio: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=_BLOCK_EPS)
        self.attn = EfficientSelfAttention(dim, num_heads, sr_ratio, qkv_bias, attn_drop, proj_drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=_BLOCK_EPS)
        self.mlp = MixFFN(dim, int(dim * mlp_ratio), proj_drop)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


class MiTStage(nn.Module):
    """Patch embedding, blocks, final LayerNorm; NCHW in, NCHW out."""

    def __init__(
        self,
        in_chans: int,
        dim: int,
        depth: int,
        num_heads: int,
        patch_size: int,
        stride: int,
        sr_ratio: int,
        drop_paths: Sequence[float],
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.patch_embed = OverlapPatchEmbed(in_chans, dim, patch_size, stride)
        self.blocks = nn.ModuleList(
            MiTBlock(dim, num_heads, sr_ratio, mlp_ratio, qkv_bias, attn_drop, proj_drop, dp)
            for dp in drop_paths[:depth]
        )
        self.norm = nn.LayerNorm(dim, eps=_BLOCK_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, h, w = self.patch_embed(x)
        for block in self.blocks:
            x = block(x, h, w)
        return _tokens_to_map(self.norm(x), h, w)


class MixTransformer(nn.Module):
    """SegFormer's MiT encoder; ``forward`` returns 4 NCHW maps at strides 4/8/16/32.

    ``variant`` picks widths/depths/heads from :data:`MIT_VARIANTS`; ``widths``, ``depths`` and
    ``num_heads`` override them. Stochastic depth grows linearly from 0 to ``drop_path_rate``
    over all blocks.
    """

    def __init__(
        self,
        variant: str = "b0",
        in_chans: int = 3,
        drop_path_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        widths: Sequence[int] | None = None,
        depths: Sequence[int] | None = None,
        num_heads: Sequence[int] | None = None,
        sr_ratios: Sequence[int] = _SR_RATIOS,
    ) -> None:
        super().__init__()
        if variant not in MIT_VARIANTS:
            raise ValueError(f"unknown MiT variant {variant!r}; choose from {sorted(MIT_VARIANTS)}")
        spec = MIT_VARIANTS[variant]
        self.variant = variant
        self.in_chans = in_chans
        self.widths: tuple[int, ...] = tuple(widths or spec.widths)
        self.depths: tuple[int, ...] = tuple(depths or spec.depths)
        self.num_heads: tuple[int, ...] = tuple(num_heads or spec.num_heads)
        self.sr_ratios: tuple[int, ...] = tuple(sr_ratios)
        self.strides: tuple[int, ...] = STAGE_STRIDES
        lengths = {len(self.widths), len(self.depths), len(self.num_heads), len(self.sr_ratios)}
        if lengths != {4}:
            raise ValueError("widths, depths, num_heads and sr_ratios need 4 entries each")
        dpr = torch.linspace(0, drop_path_rate, sum(self.depths)).tolist()
        stages = []
        prev, start = in_chans, 0
        for i in range(4):
            stages.append(
                MiTStage(
                    prev,
                    self.widths[i],
                    self.depths[i],
                    self.num_heads[i],
                    _PATCH_SIZES[i],
                    _PATCH_STRIDES[i],
                    self.sr_ratios[i],
                    dpr[start : start + self.depths[i]],
                    mlp_ratio,
                    qkv_bias,
                    attn_drop_rate,
                    proj_drop_rate,
                )
            )
            prev, start = self.widths[i], start + self.depths[i]
        self.stages = nn.ModuleList(stages)
        self.apply(_init_weights)

    @property
    def num_features(self) -> int:
        """Channels of the last stage."""
        return self.widths[-1]

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of the four stages, NCHW, strides 4/8/16/32."""
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_stages(x)


def _init_weights(m: nn.Module) -> None:
    """NVlabs initialisation: truncated normal linears, fan-out normal convs, unit norms."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------------------------
# Checkpoint layouts
# ----------------------------------------------------------------------------------------------

_NATIVE_RE = re.compile(r"stages\.(\d+)\.(patch_embed|blocks|norm)\.(.+)")

# Block-internal suffixes (without .weight/.bias): native -> NVlabs / Hugging Face.
_NV_BLOCK = {"mlp.dwconv": "mlp.dwconv.dwconv"}
_HF_BLOCK = {
    "norm1": "layer_norm_1",
    "attn.q": "attention.self.query",
    "attn.sr": "attention.self.sr",
    "attn.norm": "attention.self.layer_norm",
    "attn.proj": "attention.output.dense",
    "norm2": "layer_norm_2",
    "mlp.fc1": "mlp.dense1",
    "mlp.dwconv": "mlp.dwconv.dwconv",
    "mlp.fc2": "mlp.dense2",
}
_HF_PATCH = {"proj": "proj", "norm": "layer_norm"}

# Keys of classifier / decoder heads found in official checkpoints; never loaded.
_IGNORED_PREFIXES = ("head.", "classifier.", "decode_head.", "auxiliary_head.")
# Wrappers stripped when every remaining key carries them.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "backbone.", "segformer.")


def _split_param(rest: str) -> tuple[str, str]:
    module, _, param = rest.rpartition(".")
    return module, param


def _source_keys(native: str, layout: str) -> list[str]:
    """Keys in ``layout`` ("nvlabs", "hf" or "native") that make up the native key."""
    if layout == "native":
        return [native]
    m = _NATIVE_RE.fullmatch(native)
    if m is None:
        raise KeyError(f"not a MixTransformer key: {native}")
    i, part, rest = int(m.group(1)), m.group(2), m.group(3)
    if layout == "nvlabs":
        if part == "patch_embed":
            return [f"patch_embed{i + 1}.{rest}"]
        if part == "norm":
            return [f"norm{i + 1}.{rest}"]
        j, inner = rest.split(".", 1)
        module, param = _split_param(inner)
        return [f"block{i + 1}.{j}.{_NV_BLOCK.get(module, module)}.{param}"]
    if layout == "hf":
        if part == "patch_embed":
            module, param = _split_param(rest)
            return [f"encoder.patch_embeddings.{i}.{_HF_PATCH[module]}.{param}"]
        if part == "norm":
            return [f"encoder.layer_norm.{i}.{rest}"]
        j, inner = rest.split(".", 1)
        module, param = _split_param(inner)
        prefix = f"encoder.block.{i}.{j}."
        if module == "attn.kv":
            return [f"{prefix}attention.self.key.{param}", f"{prefix}attention.self.value.{param}"]
        return [f"{prefix}{_HF_BLOCK[module]}.{param}"]
    raise ValueError(f"unknown checkpoint layout {layout!r}")


def _export(encoder: MixTransformer, layout: str, prefix: str) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, tensor in encoder.state_dict().items():
        keys = _source_keys(name, layout)
        parts = tensor.detach().clone().chunk(len(keys), dim=0)
        for key, part in zip(keys, parts, strict=True):
            out[prefix + key] = part.contiguous()
    return out


def to_nvlabs_state_dict(encoder: MixTransformer) -> dict[str, torch.Tensor]:
    """The encoder's weights renamed to the NVlabs ``mit_b*.pth`` layout (no classifier)."""
    return _export(encoder, "nvlabs", "")


def to_hf_state_dict(
    encoder: MixTransformer, prefix: str = "segformer."
) -> dict[str, torch.Tensor]:
    """The encoder's weights in the Hugging Face ``nvidia/mit-b*`` layout (keys/values split)."""
    return _export(encoder, "hf", prefix)


def _read_checkpoint(source: str | Path) -> Mapping[str, object]:
    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"MiT checkpoint not found: {path} (expected a .pth/.pt/.bin file saved by torch.save "
            "or a .safetensors file, in the NVlabs or Hugging Face layout)"
        )
    if path.suffix == ".safetensors":
        return load_file(str(path), device="cpu")
    return torch.load(path, map_location="cpu", weights_only=True)


def _unwrap(obj: Mapping[str, object]) -> dict[str, torch.Tensor]:
    """Strip ``state_dict``/``model`` containers, heads and common key prefixes."""
    for container in ("state_dict", "model", "module"):
        inner = obj.get(container)
        if isinstance(inner, Mapping) and not isinstance(inner, torch.Tensor):
            return _unwrap(inner)
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    while True:
        sd = {k: v for k, v in sd.items() if not k.startswith(_IGNORED_PREFIXES)}
        wrapper = next(
            (p for p in _WRAPPER_PREFIXES if sd and all(k.startswith(p) for k in sd)), None
        )
        if wrapper is None:
            return sd
        sd = {k[len(wrapper) :]: v for k, v in sd.items()}


def _detect_layout(keys: Sequence[str]) -> str:
    if any(
        k.startswith("encoder.patch_embeddings.") or k.startswith("encoder.block.") for k in keys
    ):
        return "hf"
    if any(re.match(r"(patch_embed|block)[1-4]\.", k) for k in keys):
        return "nvlabs"
    if any(k.startswith("stages.") for k in keys):
        return "native"
    shown = ", ".join(list(keys)[:5]) or "<empty>"
    raise ValueError(f"cannot recognise a MiT checkpoint layout from keys: {shown}")


def _adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Adapt an RGB conv kernel to ``in_chans`` inputs (sum for 1, tiled and rescaled above)."""
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    repeat = math.ceil(in_chans / weight.shape[1])
    tiled = weight.repeat(1, repeat, 1, 1)[:, :in_chans]
    return tiled * (weight.shape[1] / in_chans)


def _format_problems(
    missing: list[str], unexpected: list[str], shapes: list[str], layout: str, limit: int = 5
) -> str:
    lines = [f"checkpoint ({layout} layout) does not match the MixTransformer:"]
    for title, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
        if items:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            lines.append(f"  {title} ({len(items)}): {', '.join(items[:limit])}{more}")
    return "\n".join(lines)


def load_segformer_weights(
    encoder: MixTransformer,
    source: str | Path | Mapping[str, object],
    *,
    adapt_in_chans: bool = True,
) -> str:
    """Load an ImageNet MiT checkpoint (NVlabs or Hugging Face layout) into ``encoder``.

    ``source`` is a ``.pth``/``.pt``/``.bin``/``.safetensors`` path or an already loaded state
    dict (optionally wrapped in ``state_dict``/``model`` and prefixed by ``module.``,
    ``_orig_mod.``, ``backbone.`` or ``segformer.``). Classifier and decoder heads are ignored.
    With ``adapt_in_chans`` an RGB first convolution is adapted to the encoder's input channels.
    Loading is strict: any missing/unexpected key or shape mismatch raises ``ValueError``.
    Returns the detected layout ("nvlabs", "hf" or "native").
    """
    raw = source if isinstance(source, Mapping) else _read_checkpoint(source)
    sd = _unwrap(raw)
    layout = _detect_layout(list(sd))
    target = encoder.state_dict()
    first_conv = "stages.0.patch_embed.proj.weight"
    converted: dict[str, torch.Tensor] = {}
    missing: list[str] = []
    shapes: list[str] = []
    used: set[str] = set()
    for name, ref in target.items():
        keys = _source_keys(name, layout)
        absent = [k for k in keys if k not in sd]
        if absent:
            missing.extend(absent)
            used.update(k for k in keys if k in sd)
            continue
        used.update(keys)
        tensor = torch.cat([sd[k] for k in keys], dim=0) if len(keys) > 1 else sd[keys[0]]
        if (
            name == first_conv
            and adapt_in_chans
            and tensor.ndim == 4
            and tensor.shape[1] != ref.shape[1]
            and tensor.shape[0] == ref.shape[0]
        ):
            tensor = _adapt_input_conv(tensor, ref.shape[1])
        if tensor.shape != ref.shape:
            shapes.append(f"{' + '.join(keys)}: {tuple(tensor.shape)} vs {tuple(ref.shape)}")
            continue
        converted[name] = tensor.to(dtype=ref.dtype)
    unexpected = [k for k in sd if k not in used]
    if missing or unexpected or shapes:
        raise ValueError(_format_problems(missing, unexpected, shapes, layout))
    encoder.load_state_dict(converted, strict=True)
    return layout
