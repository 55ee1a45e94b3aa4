"""Lightweight CNN: per-module time profile and before/after throughput (issue 16).

"before" runs the same module tree (same weights) the way ``LightweightCNN.forward`` did before
issue 16: every Conv-BN-act block as a plain ``nn.Sequential`` (separate BatchNorm pass in eval),
contiguous NCHW activations throughout. "after" is today's ``LightweightCNN.forward``.
Both run in the same process, interleaved, repeated (``--reps``); the table gives the median.

    PYTHONPATH=src python experiments/efficiency/bench_lightweight.py            # table
    PYTHONPATH=src python experiments/efficiency/bench_lightweight.py --profile  # by module
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from fersuite.models.lightweight_cnn import ConvBNAct, LightweightCNN
from fersuite.types import AffectOutput


def _seq(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run an ``nn.Sequential`` child by child (the pre-issue-16 Conv-BN-act forward)."""
    for child in module:
        x = child(x) if not isinstance(child, nn.Sequential) else _seq(child, x)
    return x


def reference_forward(net: LightweightCNN, x: torch.Tensor) -> AffectOutput:
    """The forward of LightweightCNN before issue 16 (NCHW, unfolded BatchNorm)."""
    s = net.stem
    x = torch.cat(
        (_seq(s.branch1x1, x), _seq(s.branch3x3, x), _seq(s.branch5x5, x), _seq(s.branch_pool, x)),
        dim=1,
    )
    for block in net.blocks:
        out = _seq(block.conv, x)
        x = x + out if block.use_residual else out
    x = _seq(net.expansion, x)
    return net.head(net.global_pool(x).flatten(1))


def _rate(fn: Callable[[], object], batch: int, seconds: float) -> float:
    """Images per second of ``fn`` over at least ``seconds`` (and at least 2 calls)."""
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if n >= 2 and elapsed >= seconds:
            return n * batch / elapsed


def _task(
    mode: str,
    forward: Callable[[torch.Tensor], AffectOutput],
    x: torch.Tensor,
    y: torch.Tensor,
    opt: torch.optim.Optimizer,
) -> Callable[[], object]:
    """One inference call (inference mode) or one AdamW training step."""
    if mode == "inference":

        def infer() -> object:
            with torch.inference_mode():
                return forward(x)

        return infer

    def step() -> object:
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(forward(x).expression, y)
        loss.backward()
        opt.step()
        return loss

    return step


def bench(batches: list[int], reps: int, seconds: float, size: int) -> None:
    torch.manual_seed(0)
    net = LightweightCNN(num_classes=8, in_chans=1, input_size=size)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    impls = {"before": lambda t: reference_forward(net, t), "after": net}
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, input 1x{size}x{size}")
    print("| mode | batch | before img/s | after img/s | after / before |")
    print("|---|---|---|---|---|")
    for mode in ("inference", "train step"):
        for batch in batches:
            x = torch.randn(batch, 1, size, size)
            y = torch.randint(0, 8, (batch,))
            net.train(mode != "inference")
            fns = {k: _task(mode, f, x, y, opt) for k, f in impls.items()}
            for fn in fns.values():  # warm-up
                _rate(fn, batch, 0.0)
            rates: dict[str, list[float]] = {k: [] for k in fns}
            for _ in range(reps):  # interleaved A/B
                for k, fn in fns.items():
                    rates[k].append(_rate(fn, batch, seconds))
            b, a = (statistics.median(rates[k]) for k in ("before", "after"))
            print(f"| {mode} | {batch} | {b:.0f} | {a:.0f} | {a / b:.2f} |", flush=True)


def _kind(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        if module.groups > 1:
            return "conv dw"
        return f"conv {module.kernel_size[0]}x{module.kernel_size[1]}"
    return type(module).__name__


def _part(name: str) -> str:
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] in ("stem", "blocks") else parts[0]


class _LeafTimer:
    """Forward hooks on every leaf module and every ConvBNAct (whose eval forward is one folded
    convolution, not its children): seconds by part of the network and by module type."""

    def __init__(self, net: nn.Module) -> None:
        self.names = {
            m: n
            for n, m in net.named_modules()
            if n and (not list(m.children()) or isinstance(m, ConvBNAct))
        }
        self.by_part: dict[str, float] = {}
        self.by_kind: dict[str, float] = {}
        self.starts: dict[nn.Module, float] = {}
        self.inside = 0  # > 0 while a ConvBNAct runs (its activation is counted with it)
        self.hooks = [m.register_forward_pre_hook(self._pre) for m in self.names]
        self.hooks += [m.register_forward_hook(self._post) for m in self.names]

    def _pre(self, m: nn.Module, _inputs: object) -> None:
        self.starts[m] = time.perf_counter()
        self.inside += isinstance(m, ConvBNAct)

    def _post(self, m: nn.Module, _inputs: object, _out: object) -> None:
        dt = time.perf_counter() - self.starts[m]
        if isinstance(m, ConvBNAct):
            self.inside -= 1
            kind = f"{_kind(m[0])}+BN(+act), folded"
        elif self.inside:
            return
        else:
            kind = _kind(m)
        part = _part(self.names[m])
        self.by_part[part] = self.by_part.get(part, 0.0) + dt
        self.by_kind[kind] = self.by_kind.get(kind, 0.0) + dt

    def clear(self) -> None:
        self.by_part.clear()
        self.by_kind.clear()

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()


def profile(batch: int, size: int, reps: int) -> None:
    """Forward time (eval, inference mode) by leaf module, "before" and "after", from forward
    hooks; "not in a module" is the rest (concatenation, residual adds, flatten)."""
    torch.manual_seed(0)
    net = LightweightCNN(num_classes=8, in_chans=1, input_size=size).eval()
    x = torch.randn(batch, 1, size, size)
    for label, fn in (("before", lambda: reference_forward(net, x)), ("after", lambda: net(x))):
        timer = _LeafTimer(net)
        with torch.inference_mode():
            fn()
            timer.clear()
            start = time.perf_counter()
            for _ in range(reps):
                fn()
            whole = (time.perf_counter() - start) / reps
        timer.remove()
        print(
            f"\n{label}: batch {batch}, {whole * 1e3:.1f} ms per forward "
            f"({batch / whole:.0f} img/s)"
        )
        rest = whole - sum(timer.by_kind.values()) / reps
        for title, table in (("by part", timer.by_part), ("by module type", timer.by_kind)):
            rows = sorted(table.items(), key=lambda kv: -kv[1])
            print(
                f"  {title} (ms): "
                + ", ".join(f"{n} {t / reps * 1e3:.1f}" for n, t in rows)
                + f", not in a module {rest * 1e3:.1f}"
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="+", default=[64, 1])
    p.add_argument("--reps", type=int, default=5, help="interleaved A/B repetitions")
    p.add_argument("--seconds", type=float, default=1.0, help="minimum time per measurement")
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--profile", action="store_true", help="forward time by module instead")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.profile:
        profile(args.batches[0], args.size, args.reps)
    else:
        bench(args.batches, args.reps, args.seconds, args.size)


if __name__ == "__main__":
    main()
