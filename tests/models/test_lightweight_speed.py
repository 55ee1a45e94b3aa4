"""The lightweight CNN's faster forward (issue 16): same architecture, same state_dict keys,
same outputs as the plain Conv-BN-act forward; BatchNorm folded only in eval mode."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch import nn

from fersuite.models.lightweight_cnn import ConvBNAct, LightweightCNN

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
sys.path.insert(0, str(REPO / "experiments" / "efficiency"))
from bench_lightweight import reference_forward  # noqa: E402


def _calibrated(seed: int = 0, **kwargs: object) -> LightweightCNN:
    """Non-trivial BatchNorm statistics and affine parameters, so folding shows."""
    torch.manual_seed(seed)
    net = LightweightCNN(num_classes=7, input_size=32, width_mult=0.5, drop_rate=0.0, **kwargs)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.momentum = None
        net.train()
        for _ in range(2):
            net(torch.randn(8, 1, 32, 32))
    return net.eval()


def test_eval_forward_matches_the_plain_conv_bn_forward() -> None:
    net = _calibrated()
    x = torch.randn(5, 1, 32, 32)
    with torch.inference_mode():
        fast, ref = net(x), reference_forward(net, x)
    for a, b in zip(fast, ref, strict=True):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


def test_grad_enabled_eval_forward_matches_and_is_differentiable() -> None:
    net = _calibrated(1)
    x = torch.randn(3, 1, 32, 32, requires_grad=True)
    fast = net(x).expression
    ref = reference_forward(net, x).expression
    assert torch.allclose(fast, ref, atol=1e-5)
    (gx_fast,) = torch.autograd.grad(fast.sum(), x)
    (gx_ref,) = torch.autograd.grad(ref.sum(), x)
    assert torch.allclose(gx_fast, gx_ref, atol=1e-5)


def test_train_forward_and_backward_match_the_plain_forward() -> None:
    # In float64: a convolution followed by train-mode BatchNorm has gradients that mostly
    # cancel (BatchNorm undoes its scale), so in float32 the order of the sums (which depends on
    # the thread count) moved some by over 1% of their norm.
    net = _calibrated(2).double().train()
    x = torch.randn(6, 1, 32, 32, dtype=torch.float64)
    grads = []
    for fwd in (net, lambda t: reference_forward(net, t)):
        net.zero_grad()
        fwd(x).expression.square().sum().backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    for a, b in zip(*grads, strict=True):
        assert (a - b).norm() <= 1e-9 * b.norm() + 1e-12


def test_state_dict_keys_are_those_of_plain_sequentials() -> None:
    net = LightweightCNN()
    keys = set(net.state_dict())
    assert "stem.branch1x1.0.weight" in keys and "stem.branch1x1.1.running_var" in keys
    assert "blocks.1.conv.1.0.weight" in keys and "expansion.1.bias" in keys
    assert all(isinstance(m, nn.Sequential) for m in net.modules() if isinstance(m, ConvBNAct))


def test_the_legacy_checkpoint_loads_and_gives_its_recorded_outputs(tmp_path: Path) -> None:
    ckpt = torch.load(FIXTURES / "legacy_lightweight_cnn.ckpt", weights_only=True)
    cfg = {k: v for k, v in ckpt["fersuite"]["model_cfg"].items() if k not in ("_target_", "arch")}
    path = tmp_path / "w.ckpt"
    torch.save({"state_dict": ckpt["state_dict"]}, path)
    cfg["pretrained_path"] = path
    net = LightweightCNN(num_classes=len(ckpt["fersuite"]["class_names"]), **cfg).eval()
    ref = json.loads((FIXTURES / "legacy_lightweight_cnn.outputs.json").read_text())
    g = torch.linspace(-1, 1, 1024).view(1, 1, 32, 32)
    x = torch.cat([g, g.transpose(2, 3), -g])
    with torch.inference_mode():
        out = net(x)
    for key in ("expression", "valence", "arousal"):
        assert torch.allclose(getattr(out, key), torch.tensor(ref[key]), atol=1e-5), key


def test_traced_graph_keeps_batchnorm_for_mac_counting_and_export() -> None:
    net = _calibrated(3)
    x = torch.randn(2, 1, 32, 32)
    traced = torch.jit.trace(net, x, check_trace=False)
    kinds = {n.kind() for n in traced.inlined_graph.nodes()}
    assert "aten::batch_norm" in kinds
    with torch.inference_mode():
        assert torch.allclose(traced(x)[0], net(x)[0], atol=1e-5)
