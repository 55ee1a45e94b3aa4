"""Training images/s with and without the apps' glibc malloc tuning (issue 16).

Each measurement is a fresh subprocess that runs its training loop under
:func:`fersuite.apps.run_app` (the path every console script takes), once with the default
(tuning on) and once with ``FERSUITE_MALLOC_TUNING=0``; the two alternate, ``--reps`` times.
Default: mobilenetv2_100 (timm, fersuite head), 3x224x224, batch 64, AdamW, 1 thread.

    PYTHONPATH=src python experiments/efficiency/bench_malloc.py [--steps 3 --reps 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

CHILD = """
import sys, time, torch
from torch.nn import functional as F
from fersuite.apps import run_app

def main():
    name, size, batch, steps, warmup = sys.argv[1], *map(int, sys.argv[2:6])
    torch.set_num_threads(1)
    torch.manual_seed(0)
    from fersuite.models.registry import create_model
    net = create_model("timm", name=name, in_chans=3, input_size=size, num_classes=8)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 8, (batch,))
    net.train()
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x).expression, y).backward()
        opt.step()
    print(f"RATE {steps * batch / (time.perf_counter() - start):.3f}")
    return 0

run_app("bench-malloc", main)
"""


def _measure(tuning: str, args: argparse.Namespace) -> float:
    env = dict(os.environ, FERSUITE_MALLOC_TUNING=tuning, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-c", CHILD, args.model, str(args.size), str(args.batch)]
    cmd += [str(args.steps), str(args.warmup)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return float(next(ln for ln in res.stdout.splitlines() if ln.startswith("RATE")).split()[1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mobilenetv2_100")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=3, help="timed training steps per process")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--reps", type=int, default=2, help="alternating off/on process pairs")
    args = p.parse_args()
    rates: dict[str, list[float]] = {"0": [], "1": []}
    t0 = time.perf_counter()
    for _ in range(args.reps):
        for tuning in ("0", "1"):
            rates[tuning].append(_measure(tuning, args))
            print(f"FERSUITE_MALLOC_TUNING={tuning}: {rates[tuning][-1]:.2f} img/s", flush=True)
    off, on = statistics.median(rates["0"]), statistics.median(rates["1"])
    print(
        f"{args.model} {args.size}x{args.size} batch {args.batch} AdamW train step, 1 thread: "
        f"default glibc {off:.2f} img/s, tuned (apps' default) {on:.2f} img/s, x{on / off:.2f} "
        f"({time.perf_counter() - t0:.0f} s)"
    )


if __name__ == "__main__":
    main()
