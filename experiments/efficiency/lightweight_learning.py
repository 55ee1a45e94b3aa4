"""Why the lightweight CNN "learns late" (issue 16): statistics per layer at initialisation and
after a short training run on synthetic faces.

Prints, in train mode at init, for every Conv-BN-act block: the output std, the fraction of
dead (zero) and saturated (ReLU6 = 6) activations, and |grad| / |weight| of its convolution;
then the std of the logits across the batch; then trains ``--steps`` AdamW steps (the default
``optimizer=adamw`` settings, warm-up + cosine) and reports the loss, the spread of the eval-mode
logits across images and the eval accuracy on held-out faces.

    PYTHONPATH=src python experiments/efficiency/lightweight_learning.py [--steps 48]
"""

from __future__ import annotations

import argparse
import math
import statistics

import torch
from torch import nn
from torch.nn import functional as F

from fersuite.data.synthetic import render_faces
from fersuite.models.lightweight_cnn import ConvBNAct, LightweightCNN
from fersuite.modules.schedulers import warmup_cosine


def faces(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    f = render_faces(n, 48, seed=seed)
    x = torch.from_numpy(f.images).float().div(255).sub(0.5).div(0.5).unsqueeze(1)
    return x, torch.from_numpy(f.expression)


def layer_stats(net: LightweightCNN, x: torch.Tensor, y: torch.Tensor) -> None:
    stats: dict[str, tuple[float, float, float]] = {}

    def hook(name: str):
        def fn(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
            o = out.detach()
            stats[name] = (
                o.std().item(),
                (o == 0).float().mean().item(),
                (o == 6).float().mean().item(),
            )

        return fn

    blocks = {n: m for n, m in net.named_modules() if isinstance(m, ConvBNAct)}
    hooks = [m.register_forward_hook(hook(n)) for n, m in blocks.items()]
    net.train()
    net.zero_grad()
    out = net(x)
    F.cross_entropy(out.expression, y).backward()
    for h in hooks:
        h.remove()
    print(f"{'block':28s} {'out std':>8s} {'dead':>6s} {'=6':>6s} {'|g|/|w|':>9s}")
    for n, m in blocks.items():
        w = m[0].weight
        s = stats[n]
        print(
            f"{n:28s} {s[0]:8.3f} {s[1]:6.2f} {s[2]:6.2f} {(w.grad.norm() / w.norm()).item():9.2e}"
        )
    fc = net.head.fc
    print(
        f"head.fc |g|/|w| {(fc.weight.grad.norm() / fc.weight.norm()).item():.2e}; "
        f"logit std across images {out.expression.std(0).mean().item():.4f}"
    )


def train(
    net: LightweightCNN,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    batch: int,
    lr: float,
    wd: float,
) -> None:
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=wd)
    sched = warmup_cosine(opt, total_steps=steps)
    gen = torch.Generator().manual_seed(0)
    for step in range(steps):
        net.train()
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        loss = F.cross_entropy(net(x[idx]).expression, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 8 == 0 or step == steps - 1:
            print(f"step {step:3d} train loss {loss.item():.3f}")


def bn_mismatch(net: LightweightCNN, x: torch.Tensor) -> None:
    """running_var / the variance of the BatchNorm's input on these images, per BatchNorm."""
    ratios: dict[str, float] = {}

    def hook(name: str, block: ConvBNAct):
        def fn(_m: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            var = block[0](inputs[0]).var(dim=(0, 2, 3))  # what the BatchNorm normalises
            ratios[name] = (block[1].running_var / var.clamp_min(1e-12)).median().item()

        return fn

    blocks = {n: m for n, m in net.named_modules() if isinstance(m, ConvBNAct)}
    hooks = [m.register_forward_pre_hook(hook(n, m)) for n, m in blocks.items()]
    net.eval()
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    far = sorted(ratios.items(), key=lambda kv: -abs(math.log(kv[1])))[:4]
    print(
        "BatchNorm running_var / actual input variance (median over channels), furthest from 1: "
        + ", ".join(f"{n} {v:.3g}" for n, v in far)
    )


def evaluate(net: LightweightCNN, x: torch.Tensor, y: torch.Tensor, label: str = "eval") -> None:
    net.eval()
    sat: dict[str, float] = {}
    hooks = [
        m.register_forward_hook(
            lambda _m, _i, o, n=n: sat.__setitem__(n, (o == 6).float().mean().item())
        )
        for n, m in net.named_modules()
        if isinstance(m, ConvBNAct) and isinstance(m[-1], nn.ReLU6)
    ]
    with torch.no_grad():
        logits = net(x).expression
    for h in hooks:
        h.remove()
    worst = sorted(sat.items(), key=lambda kv: -kv[1])[:3]
    print(f"{label}: ReLU6 saturated (=6) most in " + ", ".join(f"{n} {v:.2f}" for n, v in worst))
    spread = logits.std(0).mean().item()
    acc = (logits.argmax(1) == y).float().mean().item()
    print(
        f"{label}: logit std across images {spread:.4f}, accuracy {acc:.3f} "
        f"(chance 0.125), distinct predictions {logits.argmax(1).unique().numel()}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=48)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.002)
    p.add_argument("--wd", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--legacy-init",
        action="store_true",
        help="re-initialise the convolutions as before issue 16 (kaiming_normal_ fan_out, "
        "which ignores groups)",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x, y = faces(1000, seed=0)
    xv, yv = faces(256, seed=1)
    net = LightweightCNN(num_classes=8)
    if args.legacy_init:
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    layer_stats(net, x[:64], y[:64])
    norms = {n: m.weight.norm().item() for n, m in net.named_modules() if isinstance(m, nn.Conv2d)}
    train(net, x, y, args.steps, args.batch, args.lr, args.wd)
    growth = [
        (m.weight.norm() / norms[n]).item()
        for n, m in net.named_modules()
        if isinstance(m, nn.Conv2d) and m.groups > 1
    ]
    print(
        f"depthwise kernels: norm after / at init: median {statistics.median(growth):.1f}, "
        f"max {max(growth):.1f}"
    )
    bn_mismatch(net, x[:256])
    evaluate(net, xv, yv)
    # The same weights with BatchNorm statistics recomputed on the training images.
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    with torch.no_grad():
        for i in range(0, len(x), 100):
            net(x[i : i + 100])
    evaluate(net, xv, yv, "eval, BatchNorm statistics recomputed")


if __name__ == "__main__":
    main()
