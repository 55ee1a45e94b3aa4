"""Training-epoch time: plain student vs distillation with cached vs live teacher outputs.

All three are measured in this one process, on the same data and student, in interleaved
rounds (plain, cached, live, plain, cached, live, ...) so machine load affects them alike:

* ``plain``  — ``task=supervised``: the student alone;
* ``cached`` — ``task=distill distill.teacher_outputs=cached``: teacher outputs looked up by
  dataset row (the one-time teacher pass over the split is reported separately);
* ``live``   — ``task=distill distill.teacher_outputs=live``: the teacher runs on every batch.

The epoch time is the median over the epochs after the first (warm-up) of each run,
validation excluded. Target: cached <= 1.15x plain.

Usage (from the repository root)::

    .venv/bin/python experiments/kd_synthetic/bench_cache.py [--rounds 2] [--epochs 3]
        [--teacher-ckpt PATH] [override ...]

Without ``--teacher-ckpt`` a randomly initialised ResNet-18 teacher is written (weights do
not change the timing). Extra Hydra overrides apply to every run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from fersuite.checkpoint import training_card
from fersuite.config import CONFIG_DIR
from fersuite.labels import CANONICAL_CLASSES
from fersuite.models.registry import create_model

MODES = ("plain", "cached", "live")


class EpochTimer(L.Callback):
    """Wall time of every training epoch, and from fit start to the first batch."""

    def __init__(self) -> None:
        self.epochs: list[float] = []
        self.setup_s = 0.0
        self._t0 = 0.0
        self._fit0 = 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit0 = time.perf_counter()  # callbacks run before the module's on_fit_start

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.setup_s = time.perf_counter() - self._fit0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epochs.append(time.perf_counter() - self._t0)


def write_random_teacher(path: Path) -> None:
    """A fersuite checkpoint of a random ResNet-18 (48x48 grayscale, 8 classes)."""
    model_cfg = {
        "_target_": "fersuite.models.registry.create_model",
        "arch": "timm",
        "name": "resnet18",
        "in_chans": 1,
        "input_size": 48,
        "pretrained": False,
    }
    net = create_model("timm", name="resnet18", num_classes=8, in_chans=1, input_size=48)
    card = training_card(model_cfg, CANONICAL_CLASSES, True, 48, 1, (0.5,), (0.5,))
    sd = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": sd, "fersuite": card}, path)


def compose_cfg(mode: str, teacher_ckpt: Path, cache_dir: Path, extra: list[str]) -> DictConfig:
    overrides = [
        "experiment=kd_synthetic",
        "logger=none",
        "callbacks=none",
        f"paths.cache_dir={cache_dir}",
        f"distill.teacher_ckpt={teacher_ckpt}",
        *extra,
    ]
    if mode != "plain":
        overrides += ["task=distill", f"distill.teacher_outputs={mode}"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(cache_dir.parent / "out")
    return cfg


def run_once(mode: str, teacher_ckpt: Path, cache_dir: Path, epochs: int, extra: list[str]) -> Any:
    from fersuite.runs.builders import build_module

    cfg = compose_cfg(mode, teacher_ckpt, cache_dir, extra)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    dm = instantiate(cfg.data)
    module = build_module(cfg, dm)
    timer = EpochTimer()
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        callbacks=[timer],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=dm)
    cache = getattr(module, "cache", None)
    computed = bool(cache is not None and cache.computed)
    return timer, computed


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3, help="per run; the first is warm-up")
    ap.add_argument("--teacher-ckpt", type=Path, default=None)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    if args.epochs < 2:
        raise SystemExit("--epochs must be >= 2 (the first epoch is warm-up)")
    extra = ["data.train_size=1024", "data.val_size=64", "data.test_size=64", *args.overrides]

    with tempfile.TemporaryDirectory(prefix="fersuite-kd-bench-") as tmp:
        tmp_path = Path(tmp)
        teacher = args.teacher_ckpt
        if teacher is None:
            teacher = tmp_path / "teacher.ckpt"
            write_random_teacher(teacher)
        cache_dir = tmp_path / "cache"
        epoch_s: dict[str, list[float]] = {m: [] for m in MODES}
        cache_pass_s: list[float] = []
        for r in range(args.rounds):
            for mode in MODES:
                timer, computed = run_once(mode, teacher, cache_dir, args.epochs, extra)
                epoch_s[mode] += timer.epochs[1:]
                if computed:
                    cache_pass_s.append(timer.setup_s)
                print(
                    f"round {r} {mode:>6}: epochs "
                    + ", ".join(f"{t:.2f}s" for t in timer.epochs)
                    + (f" (teacher pass {timer.setup_s:.2f}s)" if computed else ""),
                    flush=True,
                )

    med = {m: statistics.median(v) for m, v in epoch_s.items()}
    print(f"\ntorch threads: {torch.get_num_threads()}, python {sys.version.split()[0]}")
    print(f"{'mode':<8}{'median epoch':>14}{'x plain':>9}{'epochs':>8}")
    for m in MODES:
        print(f"{m:<8}{med[m]:>13.2f}s{med[m] / med['plain']:>9.3f}{len(epoch_s[m]):>8}")
    if cache_pass_s:
        print(f"one-time teacher pass over the train split: {cache_pass_s[0]:.2f}s")
    ratio = med["cached"] / med["plain"]
    verdict = "meets" if ratio <= 1.15 else "misses"
    print(f"cached / plain = {ratio:.3f} ({verdict} the <= 1.15 target)")


if __name__ == "__main__":
    main()
