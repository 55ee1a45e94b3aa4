"""Tests of the MiT encoder, SegFormer checkpoint conversion, fusion and MiT-FER."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from fersuite.models.fusion import MultiScaleFusion
from fersuite.models.mit import (
    MIT_VARIANTS,
    MixTransformer,
    load_segformer_weights,
    to_hf_state_dict,
    to_nvlabs_state_dict,
)
from fersuite.models.mit_fer import MiTFER
from fersuite.types import AffectOutput, InputSpec

torch.set_num_threads(min(2, torch.get_num_threads()))


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def source() -> MixTransformer:
    """A b0 encoder with randomised norms/biases too, so that every tensor matters."""
    torch.manual_seed(0)
    enc = MixTransformer("b0").eval()
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return enc


@pytest.fixture(scope="module")
def probe() -> torch.Tensor:
    return torch.randn(2, 3, 50, 50, generator=torch.Generator().manual_seed(1))


def _outputs(enc: MixTransformer, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return enc.eval()(x)


# ---------------------------------------------------------------------------------- encoder


@pytest.mark.parametrize(("in_chans", "size"), [(1, 48), (3, 48), (1, 50), (3, 64)])
def test_encoder_shapes(in_chans: int, size: int) -> None:
    enc = MixTransformer("b0", in_chans=in_chans, drop_path_rate=0.1)
    feats = enc(torch.randn(2, in_chans, size, size))
    assert len(feats) == 4
    for f, width, stride in zip(feats, enc.widths, (4, 8, 16, 32), strict=True):
        side = math.ceil(size / stride)
        assert f.shape == (2, width, side, side)
        assert torch.isfinite(f).all()


def test_encoder_b0_224_eval() -> None:
    enc = MixTransformer("b0").eval()
    with torch.no_grad():
        feats = enc.forward_stages(torch.randn(1, 3, 224, 224))
    assert [tuple(f.shape[1:]) for f in feats] == [
        (32, 56, 56),
        (64, 28, 28),
        (160, 14, 14),
        (256, 7, 7),
    ]
    assert all(torch.isfinite(f).all() for f in feats)


def test_b0_parameter_count() -> None:
    n = _n_params(MixTransformer("b0"))
    assert abs(n / 1e6 - 3.32) <= 0.01, n


def test_variant_table() -> None:
    assert MIT_VARIANTS["b0"].widths == (32, 64, 160, 256)
    assert MIT_VARIANTS["b1"].widths == (64, 128, 320, 512)
    depths = {k: v.depths for k, v in MIT_VARIANTS.items()}
    assert depths == {
        "b0": (2, 2, 2, 2),
        "b1": (2, 2, 2, 2),
        "b2": (3, 4, 6, 3),
        "b3": (3, 4, 18, 3),
        "b4": (3, 8, 27, 3),
        "b5": (3, 6, 40, 3),
    }
    assert all(v.num_heads == (1, 2, 5, 8) for v in MIT_VARIANTS.values())
    with pytest.raises(ValueError, match="unknown MiT variant"):
        MixTransformer("b9")


def test_layer_norm_eps() -> None:
    enc = MixTransformer("b0")
    stage = enc.stages[0]
    block = stage.blocks[0]
    assert block.norm1.eps == block.norm2.eps == stage.norm.eps == 1e-6
    assert stage.patch_embed.norm.eps == 1e-5
    assert block.attn.norm is not None
    assert block.attn.norm.eps == 1e-5
    assert enc.stages[3].blocks[0].attn.sr is None  # sr ratio 1: no reduction


# ------------------------------------------------------------------------------ checkpoints


def _nvlabs(enc: MixTransformer) -> dict[str, torch.Tensor]:
    sd = to_nvlabs_state_dict(enc)
    sd["head.weight"] = torch.zeros(1000, 256)  # ImageNet classifier: ignored
    sd["head.bias"] = torch.zeros(1000)
    return sd


def _hf(enc: MixTransformer) -> dict[str, torch.Tensor]:
    sd = to_hf_state_dict(enc)
    sd["classifier.weight"] = torch.zeros(1000, 256)
    sd["classifier.bias"] = torch.zeros(1000)
    return sd


LAYOUTS: dict[str, Callable[[MixTransformer], dict[str, torch.Tensor]]] = {
    "nvlabs": _nvlabs,
    "hf": _hf,
    "hf-bare": lambda enc: to_hf_state_dict(enc, prefix=""),
}


def test_exported_key_names(source: MixTransformer) -> None:
    nv = to_nvlabs_state_dict(source)
    assert nv["block1.0.attn.kv.weight"].shape == (64, 32)
    for key in (
        "patch_embed1.proj.weight",
        "patch_embed4.norm.weight",
        "block1.0.attn.sr.weight",
        "block1.0.attn.norm.weight",
        "block2.1.mlp.dwconv.dwconv.weight",
        "norm4.bias",
    ):
        assert key in nv
    assert "block4.0.attn.sr.weight" not in nv
    hf = to_hf_state_dict(source)
    assert hf["segformer.encoder.block.0.0.attention.self.key.weight"].shape == (32, 32)
    for key in (
        "segformer.encoder.patch_embeddings.0.layer_norm.weight",
        "segformer.encoder.block.3.1.attention.output.dense.weight",
        "segformer.encoder.block.1.0.mlp.dwconv.dwconv.weight",
        "segformer.encoder.layer_norm.3.weight",
    ):
        assert key in hf
    kv = nv["block1.0.attn.kv.weight"]
    assert torch.equal(kv[:32], hf["segformer.encoder.block.0.0.attention.self.key.weight"])
    assert torch.equal(kv[32:], hf["segformer.encoder.block.0.0.attention.self.value.weight"])


@pytest.fixture(scope="module")
def expected_outputs(source: MixTransformer, probe: torch.Tensor) -> list[torch.Tensor]:
    return _outputs(source, probe)


@pytest.mark.parametrize(
    ("layout", "wrap"),
    [
        ("nvlabs", "dict"),
        ("nvlabs", "module"),
        ("nvlabs", "pth"),
        ("nvlabs", "safetensors"),
        ("hf", "dict"),
        ("hf", "state_dict"),
        ("hf", "pth"),
        ("hf", "safetensors"),
        ("hf-bare", "module"),
    ],
)
def test_round_trip(
    layout: str,
    wrap: str,
    source: MixTransformer,
    probe: torch.Tensor,
    expected_outputs: list[torch.Tensor],
    tmp_path: Path,
) -> None:
    sd = LAYOUTS[layout](source)
    src: object = sd
    if wrap == "module":
        src = {f"module.{k}": v for k, v in sd.items()}
    elif wrap == "state_dict":
        src = {"state_dict": {f"_orig_mod.{k}": v for k, v in sd.items()}, "epoch": 3}
    elif wrap == "pth":
        src = tmp_path / "mit_b0.pth"
        torch.save({"model": sd}, src)
    elif wrap == "safetensors":
        src = tmp_path / "model.safetensors"
        save_file(sd, str(src))
    fresh = MixTransformer("b0")
    expected = "nvlabs" if layout == "nvlabs" else "hf"
    assert load_segformer_weights(fresh, src) == expected  # type: ignore[arg-type]
    for a, b in zip(expected_outputs, _outputs(fresh, probe), strict=True):
        assert torch.equal(a, b)


def test_missing_key_is_named(source: MixTransformer) -> None:
    sd = to_nvlabs_state_dict(source)
    del sd["block2.1.mlp.fc1.weight"]
    with pytest.raises(ValueError, match=r"missing.*block2\.1\.mlp\.fc1\.weight"):
        load_segformer_weights(MixTransformer("b0"), sd)


def test_missing_hf_value_is_named(source: MixTransformer) -> None:
    sd = to_hf_state_dict(source)
    del sd["segformer.encoder.block.1.0.attention.self.value.bias"]
    with pytest.raises(ValueError, match=r"encoder\.block\.1\.0\.attention\.self\.value\.bias"):
        load_segformer_weights(MixTransformer("b0"), sd)


def test_wrong_shape_is_named(source: MixTransformer) -> None:
    sd = to_nvlabs_state_dict(source)
    sd["block3.0.attn.q.weight"] = torch.zeros(160, 159)
    with pytest.raises(ValueError, match=r"shape.*block3\.0\.attn\.q\.weight"):
        load_segformer_weights(MixTransformer("b0"), sd)


def test_unexpected_key_and_wrong_variant(source: MixTransformer) -> None:
    sd = to_nvlabs_state_dict(source)
    sd["block1.9.norm1.weight"] = torch.ones(32)
    with pytest.raises(ValueError, match=r"unexpected.*block1\.9\.norm1\.weight"):
        load_segformer_weights(MixTransformer("b0"), sd)
    with pytest.raises(ValueError, match="shape"):
        load_segformer_weights(MixTransformer("b1"), to_nvlabs_state_dict(source))


def test_unknown_layout_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="layout"):
        load_segformer_weights(MixTransformer("b0"), {"foo.weight": torch.zeros(1)})
    path = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match=r"nope\.pth.*safetensors"):
        load_segformer_weights(MixTransformer("b0"), path)


def test_rgb_checkpoint_into_gray_stem(source: MixTransformer, tmp_path: Path) -> None:
    path = tmp_path / "mit_b0.pth"
    torch.save(to_nvlabs_state_dict(source), path)
    rgb = source.stages[0].patch_embed.proj.weight
    gray = MixTransformer("b0", in_chans=1)
    load_segformer_weights(gray, path)
    assert torch.allclose(gray.stages[0].patch_embed.proj.weight, rgb.sum(1, keepdim=True))
    model = MiTFER(in_chans=2, pretrained_path=path)
    w2 = model.encoder.stages[0].patch_embed.proj.weight
    assert torch.allclose(w2, rgb[:, :2] * 1.5)
    assert torch.equal(
        model.encoder.stages[1].blocks[0].attn.kv.weight, source.stages[1].blocks[0].attn.kv.weight
    )
    with pytest.raises(ValueError, match="shape"):
        load_segformer_weights(MixTransformer("b0", in_chans=1), path, adapt_in_chans=False)


# ---------------------------------------------------------------------------------- MiT-FER


@pytest.mark.parametrize("fusion", ["multiscale", "last"])
@pytest.mark.parametrize(("in_chans", "size"), [(1, 48), (3, 64)])
def test_mitfer_shapes(in_chans: int, size: int, fusion: str) -> None:
    model = MiTFER(num_classes=7, in_chans=in_chans, input_size=size, fusion=fusion).eval()
    assert model.input_spec == InputSpec(size, in_chans, (0.5,) * in_chans, (0.5,) * in_chans)
    x = torch.randn(*model.input_spec.shape(batch=2))
    with torch.no_grad():
        out = model(x)
        feats = model.forward_features(x)
        pooled = model.forward_head(feats, pre_logits=True)
        again = model.forward_head(feats)
    assert isinstance(out, AffectOutput)
    assert isinstance(again, AffectOutput)
    assert out.expression.shape == (2, 7)
    assert out.valence.shape == out.arousal.shape == (2,)
    assert all(torch.isfinite(t).all() for t in out)
    assert pooled.shape == (2, model.num_features)
    expected_side = math.ceil(size / (16 if fusion == "multiscale" else 32))
    assert feats.shape == (2, model.num_features, expected_side, expected_side)
    assert torch.allclose(again.expression, out.expression, atol=1e-6)
    assert model.num_features == (128 if fusion == "multiscale" else 256)


@pytest.mark.parametrize("stride", [8, 16, 32])
def test_fusion_strides(stride: int) -> None:
    fusion = MultiScaleFusion((32, 64, 160, 256), fusion_dim=64, fusion_stride=stride)
    feats = MixTransformer("b0")(torch.randn(2, 3, 50, 50))
    out = fusion(feats)
    side = math.ceil(50 / stride)
    assert out.shape == (2, 64, side, side)
    with pytest.raises(ValueError, match="fusion_stride"):
        MultiScaleFusion((32, 64, 160, 256), fusion_stride=12)


def test_mitfer_params_and_bad_fusion() -> None:
    multi, last = MiTFER(fusion="multiscale"), MiTFER(fusion="last")
    enc = _n_params(multi.encoder)
    assert _n_params(last) == enc + 256 * 10 + 10
    assert _n_params(multi) > _n_params(last)
    assert not any(n.startswith("fusion") for n, _ in last.named_parameters())
    with pytest.raises(ValueError, match="fusion"):
        MiTFER(fusion="sum")


@pytest.mark.parametrize("fusion", ["multiscale", "last"])
def test_backward_reaches_every_parameter(fusion: str) -> None:
    torch.manual_seed(0)
    model = MiTFER(fusion=fusion, drop_rate=0.1).train()
    out = model(torch.randn(3, 1, 48, 48))
    loss = out.expression.logsumexp(1).mean() + out.valence.square().mean() + out.arousal.mean()
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_jit_trace() -> None:
    model = MiTFER().eval()
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        traced = torch.jit.trace(model, x)
        expected, got = model(x), traced(x)
    for a, b in zip(expected, got, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
