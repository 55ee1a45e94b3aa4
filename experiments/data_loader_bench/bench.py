"""Is data loading the bottleneck? Loader images/s vs training-step images/s, same run.

Measures, for the default data config (``data=synthetic``, or ``--data fer2013`` on a
fer2013.csv), with the default model (``model=timm model.name=mobilenetv2_100``, 48×48
grayscale) and batch 64:

* loader: images/s of iterating the train DataLoader alone (augmentation included), for
  the config's default ``num_workers`` and for each of ``--workers``;
* step: images/s of forward + backward + AdamW step on a batch already in memory;
* end to end: images/s of the loader feeding the training step, per ``num_workers``.

The ratio loader / step says how much headroom the input pipeline has (> 1: the model is
the bottleneck). The end-to-end figures answer which ``num_workers`` is better on this
machine, since loader workers and the training step share the same cores.

Usage: ``python experiments/data_loader_bench/bench.py [--data synthetic|fer2013]
[--root DIR] [--batches 30] [--workers 0 2]``. Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from fersuite.config import CONFIG_DIR
from fersuite.losses import AffectLoss


def compose_cfg(data: str, root: str | None, cache: str) -> DictConfig:
    overrides = [f"data={data}", "model=timm", "model.name=mobilenetv2_100"]
    overrides += [f"paths.cache_dir={cache}", "paths.root_dir=."]
    if root:
        overrides.append(f"data.root={root}")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    return cfg


def make_datamodule(cfg: DictConfig, num_workers: int) -> Any:
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    assert isinstance(data_cfg, dict)
    data_cfg["num_workers"] = num_workers
    dm = instantiate(data_cfg)
    dm.setup("fit")
    return dm


def forever(loader: Any) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of epoch after epoch (``itertools.cycle`` would replay stored batches)."""
    while True:
        yield from loader


def loader_ips(dm: Any, batches: int) -> float:
    it = forever(dm.train_dataloader())
    next(it)  # start the workers, first batch
    n = 0
    t = time.perf_counter()
    for _ in range(batches):
        n += next(it)["image"].shape[0]
    return n / (time.perf_counter() - t)


def train_step_fn(cfg: DictConfig, num_classes: int) -> tuple[Any, Any]:
    net = instantiate(cfg.model, num_classes=num_classes)
    net.train()
    loss_fn = AffectLoss(valence_weight=1.0, arousal_weight=1.0)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)

    def step(batch: dict[str, torch.Tensor]) -> None:
        opt.zero_grad(set_to_none=True)
        out = net(batch["image"])
        loss_fn(out, batch)["loss"].backward()
        opt.step()

    return net, step


def step_ips(step: Any, batch: dict[str, torch.Tensor], batches: int) -> float:
    for _ in range(3):
        step(batch)
    t = time.perf_counter()
    for _ in range(batches):
        step(batch)
    return batches * batch["image"].shape[0] / (time.perf_counter() - t)


def end_to_end_ips(dm: Any, step: Any, batches: int) -> float:
    it = forever(dm.train_dataloader())
    for _ in range(3):
        step(next(it))
    n = 0
    t = time.perf_counter()
    for _ in range(batches):
        batch = next(it)
        step(batch)
        n += batch["image"].shape[0]
    return n / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--root", default=None, help="data.root (for --data fer2013 etc.)")
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--workers", type=int, nargs="*", default=[0, 2])
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "fersuite-bench"))
    args = parser.parse_args()

    cfg = compose_cfg(args.data, args.root, args.cache)
    default_workers = int(cfg.data.num_workers)
    print(
        f"data={args.data} batch={cfg.data.batch_size} image={cfg.model.input_size}px "
        f"in_chans={cfg.model.in_chans} default num_workers={default_workers} "
        f"torch threads={torch.get_num_threads()}"
    )
    workers = sorted({default_workers, *args.workers})
    dms = {w: make_datamodule(cfg, w) for w in workers}
    dm0 = dms[workers[0]]
    _, step = train_step_fn(cfg, dm0.num_classes)
    batch = next(iter(dm0.train_dataloader()))

    results: dict[str, float] = {}
    results["step"] = step_ips(step, batch, args.batches)
    print(f"training step (forward+backward+AdamW): {results['step']:8.0f} img/s")
    for w in workers:
        results[f"loader{w}"] = loader_ips(dms[w], args.batches * 3)
        print(f"loader alone, num_workers={w}:          {results[f'loader{w}']:8.0f} img/s")
    for w in workers:
        results[f"e2e{w}"] = end_to_end_ips(dms[w], step, args.batches)
        print(f"loader + step, num_workers={w}:         {results[f'e2e{w}']:8.0f} img/s")
    ratio = results[f"loader{default_workers}"] / results["step"]
    print(
        f"ratio loader/step at the default num_workers={default_workers}: {ratio:.1f}x "
        f"({'data is not' if ratio > 1 else 'data IS'} the bottleneck)"
    )
    best = max(workers, key=lambda w: results[f"e2e{w}"])
    print(
        "end to end: "
        + ", ".join(f"num_workers={w} {results[f'e2e{w}']:.0f} img/s" for w in workers)
        + f" -> best num_workers={best}"
    )


if __name__ == "__main__":
    main()
