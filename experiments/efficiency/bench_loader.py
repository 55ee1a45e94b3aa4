"""Input pipeline: per-sample (CPU, torchvision) vs batched (on the device) augmentation.

Part 1, loader images/s per core (``num_workers=0``, one intra-op thread, default
``data.augment``), for 48x48 gray and 224x224 RGB synthetic faces read from the memory-mapped
cache, in one run:

* ``sample``: the train loader as it is by default (``data.augment.device=sample``);
* ``batch``: the loader yielding uint8 batches + per-sample parameters, *and* the batched
  augmentation applied on the training device -- here the CPU, so its cost is counted in
  the same core's budget (on a GPU it leaves the CPU entirely).

Part 2, end to end (mobilenetv2_100 at 48x48 gray, batch 64, AdamW, ``num_workers=2``): the
training step alone on a fixed batch vs the same step fed by the loader, per mode. Ratio
>= 0.9 means the loader keeps up with the step.

    PYTHONPATH=src python experiments/efficiency/bench_loader.py [--batches 20] [--skip-e2e]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fersuite.data.synthetic_datamodule import SyntheticDataModule


class RGBFaces(SyntheticDataModule):
    """The synthetic faces rendered at the model's size and stored as RGB, like a real RGB
    dataset's cache (AffectNet, RAF-DB, folders) at 224x224."""

    def load_splits(self) -> dict[str, Any]:
        splits = super().load_splits()
        tint = np.array([1.0, 0.9, 0.8], dtype=np.float32)
        for s in splits.values():
            s.images = (s.images[..., None] * tint).astype(np.uint8)
        return splits


def datamodule(size: int, chans: int, mode: str, n: int, workers: int, cache: str) -> Any:
    cls = RGBFaces if chans == 3 else SyntheticDataModule
    dm = cls(
        train_size=n, val_size=8, test_size=8, batch_size=64, num_workers=workers,
        image_size=size, in_chans=chans, mean=[0.5] * chans, std=[0.5] * chans,
        render_size=size, cache_dir=cache, augment={"device": mode},
    )  # fmt: skip
    dm.setup("fit")
    return dm


def loader_rate(dm: Any, batches: int, device_step: bool = True) -> float:
    """Images/s of the train loader (+ the device augmentation in batch mode unless
    ``device_step`` is False), after one warm-up batch."""
    images, start = 0, 0.0
    for i, batch in enumerate(dm.train_dataloader()):
        if device_step:
            batch = dm.on_after_batch_transfer(batch, 0)  # what Lightning calls after transfer
        if i == 0:
            start = time.perf_counter()
            continue
        images += batch["image"].shape[0]
        if i == batches:
            break
    return images / (time.perf_counter() - start)


def step_rates(dm: Any, steps: int) -> tuple[float, float]:
    """(step alone on one fixed batch, step fed by the loader) in images/s."""
    from fersuite.models.registry import create_model

    torch.manual_seed(0)
    net = create_model("timm", name="mobilenetv2_100", in_chans=1, input_size=48, num_classes=8)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net.train()

    def step(batch: dict[str, torch.Tensor]) -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(batch["image"]).expression, batch["expression"]).backward()
        opt.step()

    it = iter(dm.train_dataloader())
    fixed = dm.on_after_batch_transfer(next(it), 0)
    for _ in range(3):
        step(fixed)
    start = time.perf_counter()
    for _ in range(steps):
        step(fixed)
    alone = steps * 64 / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(steps):
        step(dm.on_after_batch_transfer(next(it), 0))
    fed = steps * 64 / (time.perf_counter() - start)
    return alone, fed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, default=20, help="timed batches per loader")
    ap.add_argument("--steps", type=int, default=30, help="timed steps end to end")
    ap.add_argument("--skip-e2e", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("FERSUITE_PROGRESS", "0")
    n = 64 * (a.batches + 1)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs; 1 thread, num_workers=0")
    print("| input | mode | loader images/s (per core) | vs sample |")
    print("|---|---|---:|---:|")
    with tempfile.TemporaryDirectory() as cache:
        for size, chans in ((48, 1), (224, 3)):
            label = f"{size}x{size} {'gray' if chans == 1 else 'RGB'}"
            sample = loader_rate(datamodule(size, chans, "sample", n, 0, cache), a.batches)
            dm = datamodule(size, chans, "batch", n, 0, cache)
            rows = (
                ("sample (per image, CPU)", sample),
                ("batch: loader only (CPU share on a GPU)", loader_rate(dm, a.batches, False)),
                ("batch: loader + augmentation on this CPU", loader_rate(dm, a.batches)),
            )
            for mode, rate in rows:
                print(f"| {label} | {mode} | {rate:.0f} | {rate / sample:.2f}x |", flush=True)
        if a.skip_e2e:
            return
        print("\nmobilenetv2_100, 48x48 gray, batch 64, AdamW, num_workers=2, 1 thread")
        print("| mode | step alone img/s | fed by the loader img/s | ratio |")
        print("|---|---:|---:|---:|")
        for mode in ("sample", "batch"):
            dm = datamodule(48, 1, mode, 64 * (a.steps + 8), 2, cache)
            alone, fed = step_rates(dm, a.steps)
            print(f"| {mode} | {alone:.0f} | {fed:.0f} | {fed / alone:.2f} |", flush=True)


if __name__ == "__main__":
    main()
