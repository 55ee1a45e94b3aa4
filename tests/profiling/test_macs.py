"""MAC / parameter counting: hand-computed figures, published figures, side-effect freedom."""

from __future__ import annotations

import os

import pytest
import torch
from torch import Tensor, nn
from torch.nn.functional import adaptive_avg_pool2d, scaled_dot_product_attention

from fersuite.profiling import count_macs, count_params, format_macs
from fersuite.types import AffectOutput

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class Attention(nn.Module):
    def __init__(self, mask: bool = False, causal: bool = False) -> None:
        super().__init__()
        self.mask = mask
        self.causal = causal

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool) if self.mask else None
        return scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=self.causal)


def _qkv(heads_kv: int = 3) -> tuple[Tensor, Tensor, Tensor]:
    # B=2, heads=3, Lq=5, Lk=7, Dqk=4, Dv=6
    return torch.randn(2, 3, 5, 4), torch.randn(2, heads_kv, 7, 4), torch.randn(2, heads_kv, 7, 6)


SDPA_MACS = 2 * 3 * 5 * 7 * (4 + 6)  # QK^T: B*H*Lq*Lk*Dqk, attn@V: B*H*Lq*Lk*Dv


@pytest.mark.parametrize(("mask", "causal"), [(False, False), (True, False), (False, True)])
def test_sdpa_exact(mask: bool, causal: bool) -> None:
    report = count_macs(Attention(mask=mask, causal=causal), inputs=_qkv())
    assert report.total == SDPA_MACS
    assert report.by_operator == {"scaled_dot_product_attention": SDPA_MACS}
    assert "aten::scaled_dot_product_attention" not in report.skipped_ops


def test_sdpa_grouped_query() -> None:
    class GQA(nn.Module):
        def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
            return scaled_dot_product_attention(q, k, v, enable_gqa=True)

    q, _, _ = _qkv()
    _, k, v = _qkv(heads_kv=1)
    assert count_macs(GQA(), inputs=(q, k, v)).total == SDPA_MACS


class LinearMatmul(nn.Module):
    w: Tensor
    batched: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 6)
        self.register_buffer("w", torch.randn(6, 3))
        self.register_buffer("batched", torch.randn(2, 6, 3))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h = self.proj(x)  # (2, 5, 4) -> (2, 5, 6)
        a = torch.matmul(h, self.w)  # (2, 5, 6) @ (6, 3)
        b = torch.matmul(h[0], self.batched)  # (5, 6) @ (2, 6, 3): batch from 2nd operand
        c = torch.baddbmm(a, h, self.batched)  # (2, 5, 6) @ (2, 6, 3)
        return a, b, c


def test_linear_matmul_exact() -> None:
    report = count_macs(LinearMatmul(), input_shape=(2, 5, 4))
    linear = 2 * 5 * 4 * 6
    matmul = 2 * 5 * 6 * 3 + 2 * 5 * 6 * 3
    baddbmm = 2 * 5 * 6 * 3
    assert report.by_operator == {"linear": linear, "matmul": matmul, "baddbmm": baddbmm}
    assert report.total == linear + matmul + baddbmm
    assert report.by_module == {"proj": linear}
    assert report.activations > 0


class Tiny(nn.Module):
    """Conv + BN + softmax/add, returning the project's NamedTuple."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(8, 7)

    def forward(self, x: Tensor) -> AffectOutput:
        h = self.stem(x)
        h = adaptive_avg_pool2d(h, 1).flatten(1)
        logits = self.head(self.drop(h))
        probs = logits.softmax(-1)
        return AffectOutput(logits, probs[:, 0] + probs[:, 1], torch.tanh(logits[:, 2]))


def test_namedtuple_model_unchanged() -> None:
    torch.manual_seed(0)
    model = Tiny().train()
    model.stem[1].eval()  # mixed flags must come back exactly
    flags = [m.training for m in model.modules()]
    before = {k: v.clone() for k, v in model.state_dict().items()}

    report = count_macs(model, input_shape=(2, 3, 16, 16))

    conv = 2 * 8 * 3 * 3 * 3 * 16 * 16
    bn = 2 * 2 * 8 * 16 * 16
    assert report.by_operator["conv"] == conv
    assert report.by_operator["batch_norm"] == bn  # eval-mode BN: 2 per element
    assert report.by_operator["linear"] == 2 * 8 * 7
    assert report.by_module == {"stem": conv + bn, "drop": 0, "head": 2 * 8 * 7}
    assert report.skipped_ops.get("aten::softmax") == 1
    assert report.skipped_ops.get("aten::add") == 1
    assert "aten::tanh" in report.skipped_ops

    assert [m.training for m in model.modules()] == flags
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN stats untouched
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_dict_output_and_compiled_wrapper() -> None:
    class DictOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x: Tensor) -> dict[str, Tensor]:
            return {"expression": self.fc(x), "valence": x.mean(-1)}

    model = DictOut()
    assert count_macs(model, input_shape=(2, 4)).total == 2 * 4 * 3
    compiled = torch.compile(model)
    assert isinstance(compiled, nn.Module)
    assert count_macs(compiled, input_shape=(2, 4)).total == 2 * 4 * 3
    assert count_params(compiled) == count_params(model)


def test_argument_validation() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        count_macs(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="exactly one"):
        count_macs(nn.Linear(2, 2), input_shape=(1, 2), inputs=torch.zeros(1, 2))


def test_count_params_trainable() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    model[0].weight.requires_grad_(False)
    assert count_params(model).total == 4 * 3 + 3 + 3 * 2 + 2
    assert count_params(model).trainable == 3 + 3 * 2 + 2


def test_format_macs() -> None:
    assert format_macs(314_193_216) == "0.31 GMac"
    assert format_macs(1_302_113_344) == "1.30 GMac"
    assert format_macs(22_100_000) == "22.1 MMac"
    assert format_macs(4_500) == "4.5 KMac"
    assert format_macs(12) == "12 Mac"


timm = pytest.importorskip("timm")


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [("mobilenetv2_100", 0.30e9, 0.32e9), ("resnet18", 1.82e9 * 0.98, 1.82e9 * 1.02)],
)
def test_published_figures(name: str, low: float, high: float) -> None:
    model = timm.create_model(name, pretrained=False)
    report = count_macs(model, input_shape=(1, 3, 224, 224), activations=False)
    assert low <= report.total <= high
    if name == "mobilenetv2_100":
        assert count_params(model).total == pytest.approx(3.50e6, abs=0.01e6)
