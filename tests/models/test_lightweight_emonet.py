"""Tests for the lightweight FER CNN and the EmoNet teacher."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fvcore.nn import FlopCountAnalysis
from torch import nn

from fersuite.models.emonet import EmoNet, load_emonet_weights
from fersuite.models.lightweight_cnn import LightweightCNN
from fersuite.types import AffectOutput, InputSpec

# Key -> shape table of the official EmoNet(n_expression=8) (face-analysis/emonet @ 49eef30).
# It was produced by instantiating the unmodified official module in a scratch directory
# outside this repository and dumping its state_dict shapes (see the "_comment" field); the
# official code itself (CC BY-NC-ND) is not part of fersuite.
FIXTURE = Path(__file__).parent / "fixtures" / "emonet8_keys.json"


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    # The CI box has 2 shared cores; OpenMP spin-waiting makes small convs ~20x slower
    # with 2 threads under contention, so run this module single-threaded.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _macs(model: nn.Module, x: torch.Tensor) -> float:
    flops = FlopCountAnalysis(model.eval(), x)
    flops.unsupported_ops_warnings(False)
    flops.uncalled_modules_warnings(False)
    return float(flops.total())


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _check_affect(out: AffectOutput, batch: int, classes: int, bounded: bool = True) -> None:
    assert isinstance(out, AffectOutput)
    assert out.expression.shape == (batch, classes)
    assert out.valence.shape == (batch,)
    assert out.arousal.shape == (batch,)
    for t in out:
        assert torch.isfinite(t).all()
    if bounded:
        assert out.valence.abs().max() <= 1.0
        assert out.arousal.abs().max() <= 1.0


# ----------------------------------------------------------------------------- lightweight
@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("size", [48, 64, 96])
def test_lightweight_shapes(in_chans: int, size: int) -> None:
    torch.manual_seed(0)
    model = LightweightCNN(num_classes=7, in_chans=in_chans, input_size=size).eval()
    assert model.input_spec == InputSpec(size, in_chans, (0.5,) * in_chans, (0.5,) * in_chans)
    assert model.num_classes == 7
    x = torch.randn(2, *model.input_spec.shape()[1:])
    with torch.no_grad():
        feats = model.forward_features(x)
        out = model(x)
        pooled = model.forward_head(feats, pre_logits=True)
        head_out = model.forward_head(feats)
    side = -(-size // 16)
    assert feats.shape == (2, model.num_features, side, side)
    assert isinstance(pooled, torch.Tensor) and pooled.shape == (2, model.num_features)
    _check_affect(out, 2, 7)
    assert isinstance(head_out, AffectOutput)
    torch.testing.assert_close(head_out.expression, out.expression)


def test_lightweight_budget() -> None:
    model = LightweightCNN()
    assert _n_params(model) < 1_000_000
    assert _macs(model, torch.randn(1, 1, 48, 48)) < 50e6
    small = LightweightCNN(width_mult=0.5, expansion_channels=320)
    assert _n_params(small) < _n_params(model)
    assert small.num_features == 320


def test_lightweight_rgb_224() -> None:
    model = LightweightCNN(in_chans=3, input_size=224).eval()
    with torch.no_grad():
        _check_affect(model(torch.randn(1, 3, 224, 224)), 1, 8)


def test_lightweight_backward_reaches_all_parameters() -> None:
    torch.manual_seed(0)
    model = LightweightCNN(num_classes=8).train()
    out = model(torch.randn(4, 1, 48, 48))
    loss = (
        nn.functional.cross_entropy(out.expression, torch.tensor([0, 1, 2, 3]))
        + out.valence.square().mean()
        + out.arousal.square().mean()
    )
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert no_grad == []


def test_lightweight_state_dict_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = LightweightCNN(in_chans=3, input_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    path = tmp_path / "light.pt"
    torch.save(model.state_dict(), path)
    loaded = LightweightCNN(in_chans=3, input_size=64, pretrained_path=path).eval()
    # Lightning checkpoints nest the weights under "state_dict" with a module prefix
    lightning = tmp_path / "light.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, lightning)
    from_ckpt = LightweightCNN(in_chans=3, input_size=64, pretrained_path=lightning).eval()
    with torch.no_grad():
        ref = model(x)
        for other in (loaded, from_ckpt):
            for a, b in zip(ref, other(x), strict=True):
                torch.testing.assert_close(a, b)


def test_lightweight_strict_load_error(tmp_path: Path) -> None:
    path = tmp_path / "seven.pt"
    torch.save(LightweightCNN(num_classes=7).state_dict(), path)
    with pytest.raises(ValueError, match=r"head\.fc\.weight"):
        LightweightCNN(num_classes=8, pretrained_path=path)
    sd = LightweightCNN().state_dict()
    sd["bogus.weight"] = torch.zeros(1)
    del sd["expansion.0.weight"]
    torch.save(sd, path)
    with pytest.raises(ValueError, match=r"expansion\.0\.weight.*bogus\.weight"):
        LightweightCNN(pretrained_path=path)


def test_lightweight_jit_trace() -> None:
    model = LightweightCNN().eval()
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        traced = torch.jit.trace(model, x)
        ref, got = model(x), traced(x)
    for a, b in zip(ref, got, strict=True):
        torch.testing.assert_close(a, b)


def test_lightweight_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        LightweightCNN(num_classes=0)
    with pytest.raises(ValueError):
        LightweightCNN(input_size=16)


# ---------------------------------------------------------------------------------- EmoNet
@pytest.fixture(scope="module")
def emonet() -> EmoNet:
    torch.manual_seed(0)
    return EmoNet(num_expressions=8).eval()


@pytest.fixture(scope="module")
def official_table() -> dict:
    return json.loads(FIXTURE.read_text())


def test_emonet_keys_match_official(emonet: EmoNet, official_table: dict) -> None:
    expected = [(k, list(shape)) for k, shape in official_table["keys"]]
    got = [(k, list(v.shape)) for k, v in emonet.state_dict().items()]
    assert got == expected
    assert _n_params(emonet) == official_table["num_parameters"]


def test_emonet_five_classes_only_changes_last_layer(official_table: dict) -> None:
    expected = {k: list(shape) for k, shape in official_table["keys"]}
    expected["emo_fc_2.3.weight"] = [7, 128]
    expected["emo_fc_2.3.bias"] = [7]
    got = {k: list(v.shape) for k, v in EmoNet(num_expressions=5).state_dict().items()}
    assert got == expected


def test_emonet_params_and_macs(emonet: EmoNet) -> None:
    assert abs(_n_params(emonet) - 13.96e6) <= 0.01e6
    macs = _macs(emonet, torch.rand(1, 3, 256, 256))
    assert macs == pytest.approx(16.98e9, rel=0.02)


def test_emonet_forward_256(emonet: EmoNet) -> None:
    assert emonet.input_spec == InputSpec(256, 3, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert emonet.num_classes == 8
    with torch.no_grad():
        out, heatmaps = emonet.forward_with_heatmaps(torch.rand(1, 3, 256, 256), clamp_va=False)
    _check_affect(out, 1, 8, bounded=False)
    assert heatmaps.shape == (1, 68, 64, 64)
    assert torch.isfinite(heatmaps).all()
    clamped = emonet._to_affect(
        torch.cat([out.expression, out.valence[:, None], out.arousal[:, None]], dim=1), True
    )
    torch.testing.assert_close(clamped.valence, out.valence.clamp(-1, 1))
    torch.testing.assert_close(clamped.arousal, out.arousal.clamp(-1, 1))


def test_emonet_forward_clamps_and_traces(emonet: EmoNet) -> None:
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        raw = emonet.forward_raw(x)
        out = emonet(x)
        feats = emonet.forward_features(x)
        traced = torch.jit.trace(emonet, x, check_trace=False)
        got = traced(x)
    _check_affect(out, 2, 8)
    _check_affect(raw, 2, 8, bounded=False)
    torch.testing.assert_close(out.valence, raw.valence.clamp(-1, 1))
    torch.testing.assert_close(out.expression, raw.expression)
    assert feats.shape == (2, 256, 2, 2)
    for a, b in zip(out, got, strict=True):
        torch.testing.assert_close(a, b)


def test_emonet_rejects_bad_input(emonet: EmoNet) -> None:
    with pytest.raises(ValueError, match="divisible by 64"):
        emonet(torch.rand(1, 3, 100, 100))
    with pytest.raises(ValueError, match="RGB"):
        emonet(torch.rand(1, 1, 128, 128))


def test_emonet_trunk_stays_frozen() -> None:
    model = EmoNet(num_expressions=8)
    model.train()
    trunk_ids = {id(p) for p in model.trunk_parameters()}
    for name, p in model.named_parameters():
        assert p.requires_grad == (id(p) not in trunk_ids), name
    assert any(name.startswith("emo_") for name, p in model.named_parameters() if p.requires_grad)
    for module in model.trunk_modules():
        assert all(not m.training for m in module.modules())
    assert model.emo_net_2.training and model.emo_fc_2[1].training
    assert model.conv1x1_input_emo_2.training
    unfrozen = EmoNet(freeze_trunk=False).train()
    assert all(p.requires_grad for p in unfrozen.parameters())
    assert unfrozen.bn1.training
    model.set_trunk_frozen(False)
    assert all(p.requires_grad for p in model.parameters()) and model.m1.training
    model.set_trunk_frozen(True)
    assert not model.conv1.weight.requires_grad and not model.m1.b3_4.bn1.training


def _perturbed_state_dict(model: EmoNet) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return {
        k: (v + torch.rand_like(v) if v.is_floating_point() else v)
        for k, v in model.state_dict().items()
    }


def test_emonet_load_official_style_checkpoint(tmp_path: Path) -> None:
    sd = _perturbed_state_dict(EmoNet(freeze_trunk=False))
    # official files come from DataParallel ("module." prefix); old ones lack the BN counters
    official_like = {
        f"module.{k}": v for k, v in sd.items() if not k.endswith("num_batches_tracked")
    }
    path = tmp_path / "emonet_8.pth"
    torch.save(official_like, path)
    model = EmoNet(num_expressions=8, pretrained_path=path)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, sd[k] if not k.endswith("num_batches_tracked") else v)
    assert not model.conv4.bn1.training  # frozen trunk stays in eval after loading


def test_emonet_strict_load_errors(tmp_path: Path) -> None:
    five = EmoNet(num_expressions=5).state_dict()
    path = tmp_path / "emonet_5.pth"
    torch.save(five, path)
    with pytest.raises(ValueError, match=r"shape mismatches: emo_fc_2\.3\.weight"):
        load_emonet_weights(EmoNet(num_expressions=8), path)
    load_emonet_weights(EmoNet(num_expressions=5), path)

    broken = dict(five)
    del broken["m1.b2_plus_1.conv3.weight"]
    broken["m1.b2_plus_4.conv3.weight"] = torch.zeros(1)
    torch.save(broken, path)
    with pytest.raises(ValueError) as info:
        load_emonet_weights(EmoNet(num_expressions=5), path)
    message = str(info.value)
    assert "1 missing keys: m1.b2_plus_1.conv3.weight" in message
    assert "1 unexpected keys: m1.b2_plus_4.conv3.weight" in message

    with pytest.raises(FileNotFoundError):
        load_emonet_weights(EmoNet(), tmp_path / "absent.pth")
    torch.save([1, 2, 3], path)
    with pytest.raises(ValueError, match="state_dict"):
        load_emonet_weights(EmoNet(), path)
