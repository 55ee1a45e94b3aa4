"""Training images/s: fersuite's AffectModule + Lightning Trainer vs. a plain PyTorch loop.

Both runs train the same model (identical initial weights), on the same DataLoader of the
same synthetic faces, with the same loss, optimizer and batch size, in this one process. The
Lightning run is configured as fersuite-train runs are: AffectModule (per-step loss logging and
train metrics), EfficiencyCallback and CSVLogger on; progress bar, checkpointing and
validation off (they happen outside the training steps this measures).

The clock starts when batch ``--warmup`` starts (after it is loaded) and stops when the last
batch's optimizer step is done, so both measure the same steps, data loading of the later
batches included. Runs alternate (plain, lightning, plain, ...) ``--repeats`` times; the
median images/s of each and their ratio are printed. Target: lightning / plain >= 0.95.

    python experiments/lightning_overhead/bench.py              # mobilenetv2_100, 1x48x48
    python experiments/lightning_overhead/bench.py --model lightweight_cnn --steps 40
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from fersuite.callbacks.efficiency import EfficiencyCallback
from fersuite.data.synthetic_datamodule import SyntheticDataModule
from fersuite.losses import AffectLoss
from fersuite.models.registry import create_model
from fersuite.modules.affect_module import AffectModule
from fersuite.modules.optim import weight_decay_param_groups


class StepClock(L.Callback):
    """Wall time from the start of batch ``warmup`` to the end of the last batch."""

    def __init__(self, warmup: int, last: int) -> None:
        self.warmup, self.last = warmup, last
        self.t0 = self.t1 = 0.0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, i: int) -> None:
        if i == self.warmup:
            self.t0 = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, i: int
    ) -> None:
        if i == self.last:
            self.t1 = time.perf_counter()


def build_net(args: argparse.Namespace) -> nn.Module:
    kw: dict[str, Any] = {"num_classes": 8, "in_chans": args.in_chans, "input_size": args.size}
    if args.model in ("lightweight_cnn", "mit_fer", "emonet"):
        return create_model(args.model, **kw)
    return create_model("timm", name=args.model, **kw)


def optimizer_factory(lr: float) -> Any:
    return partial(torch.optim.AdamW, lr=lr, weight_decay=0.05)


def run_plain(net: nn.Module, loader: Any, args: argparse.Namespace) -> float:
    net.train()
    loss_fn = AffectLoss()
    opt = optimizer_factory(args.lr)(params=weight_decay_param_groups(net))  # as AffectModule
    last = args.warmup + args.steps - 1
    t0 = t1 = 0.0
    for i, batch in enumerate(loader):
        if i == args.warmup:
            t0 = time.perf_counter()
        out = net(batch["image"])
        loss = loss_fn(out, batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i == last:
            t1 = time.perf_counter()
            break
    return args.steps * args.batch_size / (t1 - t0)


def run_lightning(
    net: nn.Module, dm: SyntheticDataModule, args: argparse.Namespace, log_dir: Path
) -> tuple[float, float | None]:
    module = AffectModule(
        net=net,
        loss=AffectLoss(),
        optimizer=optimizer_factory(args.lr),
        scheduler=None,
        class_names=dm.class_names,
        has_va=True,
    )
    last = args.warmup + args.steps - 1
    clock = StepClock(args.warmup, last)
    efficiency = EfficiencyCallback(
        latency_runs=2, latency_warmup=1, throughput_batch=2, throughput_runs=1, warmup_batches=3
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=last + 1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=CSVLogger(str(log_dir), name="csv"),
        callbacks=[efficiency, clock],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=10,
        precision="32-true",
    )
    trainer.fit(module, train_dataloaders=dm.train_dataloader())
    ips = args.steps * args.batch_size / (clock.t1 - clock.t0)
    return ips, efficiency.results.get("efficiency/train_ips")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mobilenetv2_100", help="zoo arch or timm name")
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--in-chans", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--augment", action="store_true", help="train-time augmentation on")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    n = args.batch_size * (args.warmup + args.steps + 1)
    dm = SyntheticDataModule(
        train_size=n,
        val_size=8,
        test_size=8,
        render_size=args.size,
        batch_size=args.batch_size,
        num_workers=0,
        image_size=args.size,
        in_chans=args.in_chans,
        augment={} if args.augment else None,
        cache_dir=None,
    )
    dm.setup("fit")
    base = build_net(args)
    plain_ips: list[float] = []
    lightning_ips: list[float] = []
    callback_ips: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            plain_ips.append(run_plain(copy.deepcopy(base), dm.train_dataloader(), args))
            ips, cb = run_lightning(copy.deepcopy(base), dm, args, Path(tmp) / str(r))
            lightning_ips.append(ips)
            if cb is not None:
                callback_ips.append(cb)
            print(
                f"repeat {r}: plain {plain_ips[-1]:8.1f} img/s   "
                f"lightning {lightning_ips[-1]:8.1f} img/s",
                flush=True,
            )

    plain = statistics.median(plain_ips)
    lightning = statistics.median(lightning_ips)
    result = {
        "model": args.model,
        "input": [args.in_chans, args.size, args.size],
        "batch_size": args.batch_size,
        "timed_steps": args.steps,
        "repeats": args.repeats,
        "threads": args.threads,
        "augment": args.augment,
        "plain_ips_median": plain,
        "lightning_ips_median": lightning,
        "ratio": lightning / plain,
        "plain_ips": plain_ips,
        "lightning_ips": lightning_ips,
        "efficiency_callback_train_ips": callback_ips,
        "torch": torch.__version__,
        "lightning": L.__version__,
        "cpu": platform.processor() or platform.machine(),
    }
    print(f"plain PyTorch loop : {plain:8.1f} img/s (median of {args.repeats})")
    print(f"fersuite + Lightning: {lightning:8.1f} img/s (median of {args.repeats})")
    print(f"ratio lightning/plain: {result['ratio']:.3f} (target >= 0.95)")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
