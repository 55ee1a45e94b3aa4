"""Every architecture of the registry keeps the same contract (timm's test_model_default_cfgs
is the model): AffectOutput, forward_features/forward_head, model card round trip, state-dict
round trip and ONNX export parity. Tiny configurations: the whole file runs in seconds."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from fersuite.card import FaceCrop, ModelCard, spec_from
from fersuite.checkpoint import build_model, read_card, trained_model_card
from fersuite.deploy.base import OUTPUT_NAMES, TupleOutput
from fersuite.deploy.onnx import OnnxModel, export_onnx
from fersuite.models.registry import create_model, list_models
from fersuite.types import AffectOutput
from tests._helpers.export import FAST_ONNX

#: Tiny keyword values per architecture (every registered one must be listed here).
TINY: dict[str, dict[str, Any]] = {
    "emonet": {"in_chans": 3, "input_size": 64, "num_stacks": 1},
    "lightweight_cnn": {"in_chans": 1, "input_size": 32, "width_mult": 0.25},
    "mit_fer": {"in_chans": 1, "input_size": 32, "fusion_dim": 32, "drop_path_rate": 0.0},
    "timm": {"name": "mobilenetv2_050", "in_chans": 1, "input_size": 32},
}
CLASSES = ("neutral", "happy", "sad", "surprise", "fear")


def test_every_registered_architecture_is_covered() -> None:
    assert sorted(TINY) == list_models()


def _calibrated(net: nn.Module, x: torch.Tensor) -> nn.Module:
    """Input-dependent eval outputs: random heads, BatchNorm statistics from a few batches."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Linear):
                m.weight.copy_(0.02 * torch.randn(m.weight.shape, generator=gen))
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None
        net.train()
        for _ in range(2):
            net(torch.randn((8, *x.shape[1:]), generator=gen))
    return net.eval()


@pytest.fixture(scope="module", params=sorted(TINY))
def built(request: pytest.FixtureRequest) -> tuple[str, nn.Module, ModelCard, torch.Tensor]:
    arch = request.param
    kwargs = TINY[arch]
    torch.manual_seed(0)
    net = create_model(arch, num_classes=len(CLASSES), **kwargs)
    c, s = kwargs["in_chans"], kwargs["input_size"]
    x = torch.randn((3, c, s, s), generator=torch.Generator().manual_seed(1))
    _calibrated(net, x)
    model_cfg = trained_model_card({"arch": arch, **kwargs}, "<test>")
    card = ModelCard(
        arch=arch,
        kwargs={k: v for k, v in model_cfg.items() if k not in ("_target_", "arch")},
        class_names=CLASSES,
        has_va=True,
        input=spec_from(s, c, [0.5], [0.5]),
        face_crop=FaceCrop("center"),
    )
    return arch, net, card, x


def _same(a: AffectOutput, b: Any, atol: float = 1e-5, rtol: float = 0.0) -> None:
    for name, r, g in zip(OUTPUT_NAMES, a, b, strict=True):
        g = torch.as_tensor(g)
        assert g.shape == r.shape, name
        tol = atol + rtol * float(r.abs().max())
        assert float((r - g).abs().max()) <= tol, (name, float((r - g).abs().max()))


def test_output_and_feature_api(built: tuple[str, nn.Module, ModelCard, torch.Tensor]) -> None:
    arch, net, _, x = built
    with torch.no_grad():
        out = net(x)
        feats = net.forward_features(x)  # type: ignore[operator]
        head = net.forward_head(feats)  # type: ignore[operator]
        pre = net.forward_head(feats, pre_logits=True)  # type: ignore[operator]
    assert isinstance(out, AffectOutput), arch
    assert out.expression.shape == (3, len(CLASSES)) and out.valence.shape == (3,)
    assert out.arousal.shape == (3,) and feats.ndim == 4 and feats.shape[0] == 3
    assert isinstance(head, AffectOutput)
    _same(out, head)
    assert pre.ndim == 2 and pre.shape[0] == 3
    assert float(out.expression.std(dim=0).max()) > 1e-4  # outputs depend on the input
    assert net.input_spec.size == x.shape[-1] and net.input_spec.channels == x.shape[1]


def test_card_and_state_dict_round_trip(
    built: tuple[str, nn.Module, ModelCard, torch.Tensor],
) -> None:
    _, net, card, x = built
    again = read_card(card.to_dict(), "<card>")
    assert again == card
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    buf.seek(0)
    rebuilt = build_model(again, "<card>")
    rebuilt.load_state_dict(torch.load(buf, weights_only=True), strict=True)
    rebuilt.eval()
    with torch.no_grad():
        _same(net(x), rebuilt(x), atol=0.0)


def test_onnx_export_parity(
    built: tuple[str, nn.Module, ModelCard, torch.Tensor], tmp_path: Path
) -> None:
    _, net, _, x = built
    path = tmp_path / "m.onnx"
    # The legacy exporter is several times faster here (MiT-FER: ~4 s instead of ~22 s with
    # dynamo; tests/_helpers/export.py); tests/export covers dynamo, fersuite-export's default.
    export_onnx(TupleOutput(net).eval(), x[:2], path, max_batch=8, **FAST_ONNX)
    with torch.no_grad():
        _same(net(x), OnnxModel(path)(x), atol=1e-4, rtol=1e-4)
