"""The lightweight CNN learns from the first steps (issue 16): its convolutions start at He
init over their true fan-out (depthwise kernels included), so a short AdamW run at the default
optimiser settings gives eval-mode outputs that depend on the image (before the fix the
depthwise kernels started ~sqrt(channels) times too small, Adam's steps grew them ~10% a step,
the BatchNorm running statistics lagged and eval outputs were a constant)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from fersuite.data.synthetic import render_faces
from fersuite.models.lightweight_cnn import LightweightCNN


def test_every_convolution_starts_at_he_init_over_its_true_fan_out() -> None:
    torch.manual_seed(0)
    net = LightweightCNN()
    depthwise = 0
    for name, m in net.named_modules():
        if isinstance(m, nn.Conv2d) and m.weight.numel() >= 512:
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            std = m.weight.std().item()
            assert abs(std / math.sqrt(2.0 / fan_out) - 1) < 0.15, (name, std)
            depthwise += m.groups > 1
    assert depthwise >= 10


def test_a_short_training_run_gives_image_dependent_eval_outputs() -> None:
    torch.manual_seed(0)
    faces = render_faces(128, 32, seed=0)
    x = torch.from_numpy(faces.images).float().div(127.5).sub(1).unsqueeze(1)
    y = torch.from_numpy(faces.expression)
    net = LightweightCNN(num_classes=8, input_size=32)
    # conf/optimizer/adamw.yaml defaults (no warm-up: the collapse shows sooner).
    opt = torch.optim.AdamW(net.parameters(), lr=0.002, weight_decay=0.05)
    gen = torch.Generator().manual_seed(0)
    losses = []
    net.train()
    for _ in range(12):
        idx = torch.randint(0, len(x), (16,), generator=gen)
        loss = F.cross_entropy(net(x[idx]).expression, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < losses[0]
    net.eval()
    with torch.no_grad():
        out = net(x[:64])
    # Constant outputs (before the fix): logit std across images ~1e-5.
    assert out.expression.std(0).mean().item() > 0.05
    assert out.valence.std().item() > 1e-3
