"""What is in a dataset: split sizes, per-class histograms, valence/arousal coverage
(``data_stats.json``) and a grid of sample images per class (``samples.png``).

``data=multi``: the same for each source (its own classes, ``sources.<name>`` in
``data_stats.json``, one titled grid per source in ``samples.png``), and the pooled split sizes
and class counts in the multi classes (a class a source lacks counts nothing for it).

The library of ``fersuite-data`` (:mod:`fersuite.cli.data`): :func:`inspect_dataset` builds
(or opens) the dataset's cache, prints the report and writes both files.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig
from PIL import Image, ImageDraw, ImageFont
from rich.console import Console
from rich.table import Table

from fersuite.data.base import SPLITS, AffectDataModule, ArraySplit
from fersuite.data.multi import MultiDataModule
from fersuite.utils.console import make_console
from fersuite.utils.io import atomic_path, atomic_write_json

log = logging.getLogger("fersuite.data")

__all__ = [
    "dataset_stats",
    "inspect_dataset",
    "multi_stats",
    "print_pooled",
    "print_report",
    "run",
    "sample_grid",
    "save_sample_grid",
    "va_coverage",
]


def dataset_stats(dm: AffectDataModule) -> dict[str, Any]:
    """The ``data_stats.json`` contents of a set-up DataModule."""
    names = list(dm.class_names)
    splits: dict[str, Any] = {}
    shape: list[int] = []
    for split in SPLITS:
        s = dm.splits[split]
        counts = np.bincount(s.hard_labels, minlength=len(names))
        splits[split] = {
            "size": len(s),
            "class_counts": {n: int(c) for n, c in zip(names, counts, strict=True)},
        }
        shape = shape or [int(v) for v in s.images.shape[1:]]
    return {
        "num_classes": len(names),
        "class_names": names,
        "image_shape": shape,
        "splits": splits,
        "skipped": int(getattr(dm, "skipped", 0)),
    }


def multi_stats(dm: MultiDataModule) -> dict[str, Any]:
    """The ``data_stats.json`` of a set-up ``data=multi``: pooled sizes and class counts (multi
    classes), and each source's own :func:`dataset_stats` under ``sources``."""
    names = list(dm.class_names)
    sources = {name: dataset_stats(source) for name, source in dm.sources.items()}
    splits = {
        split: {
            "size": int(sum(s["splits"][split]["size"] for s in sources.values())),
            "class_counts": {n: int(c) for n, c in zip(names, dm.class_counts(split), strict=True)},
        }
        for split in SPLITS
    }
    return {
        "num_classes": len(names),
        "class_names": names,
        "image_shape": None,  # each source keeps its own (see sources.<name>.image_shape)
        "splits": splits,
        "skipped": int(sum(s["skipped"] for s in sources.values())),
        "sources": sources,
    }


def va_coverage(split: ArraySplit) -> float | None:
    """Share of samples with valid valence/arousal (None: the dataset has none)."""
    if split.valence is None or split.va_mask is None:
        return None
    return float(np.mean(split.va_mask)) if len(split) else 0.0


def _count_table(stats: dict[str, Any], title: str) -> Table:
    """Samples per class (rows) and split (columns), with the totals."""
    table = Table(title=title)
    table.add_column("class")
    for split in SPLITS:
        table.add_column(split, justify="right")
    for name in stats["class_names"]:
        table.add_row(name, *(str(stats["splits"][s]["class_counts"][name]) for s in SPLITS))
    table.add_row("[bold]total", *(f"[bold]{stats['splits'][s]['size']}" for s in SPLITS))
    return table


def print_report(stats: dict[str, Any], dm: AffectDataModule, console: Console) -> None:
    table = _count_table(stats, "samples per class and split")
    cover = [va_coverage(dm.splits[s]) for s in SPLITS]
    if any(c is not None for c in cover):
        table.add_row("valid VA", *("-" if c is None else f"{c:.1%}" for c in cover))
    console.print(table)
    shape = "×".join(str(v) for v in stats["image_shape"])
    info = getattr(dm, "info", {}) or {}
    console.print(f"image shape: {shape} uint8 (cached), model input {dm.image_size}px")
    console.print(f"skipped bad samples: {stats['skipped']}")
    for key, label in (("dropped", "dropped by the label rules"), ("no_face", "no face found")):
        if info.get(key):
            console.print(f"{label}: {info[key]}")
    cache = getattr(dm, "cache_path", None)
    if cache is not None:
        console.print(f"cache: {cache}")


def print_pooled(stats: dict[str, Any], console: Console) -> None:
    """The pooled table of ``data=multi`` (its classes, every source's samples)."""
    console.print(_count_table(stats, "all sources: samples per class and split"))


def save_sample_grid(
    dm: AffectDataModule, path: str | os.PathLike[str], per_class: int = 8, split: str = "train"
) -> Path:
    """A PNG with one labelled row per class and up to ``per_class`` of its images; for
    ``data=multi``, one such grid per source under its name."""
    if isinstance(dm, MultiDataModule):
        grid = _stacked({n: sample_grid(src, per_class, split) for n, src in dm.sources.items()})
    else:
        grid = sample_grid(dm, per_class, split)
    out = Path(path)
    with atomic_path(out) as tmp:
        grid.save(tmp, format="PNG")
    return out


def _stacked(grids: dict[str, Image.Image]) -> Image.Image:
    """The grids one under the other, each below a line with its name."""
    title_h = 16
    width = max(g.width for g in grids.values())
    out = Image.new(
        "RGB", (width, sum(g.height + title_h for g in grids.values())), (255, 255, 255)
    )
    draw = ImageDraw.Draw(out)
    y = 0
    for name, grid in grids.items():
        draw.text((4, y + 2), f"source {name}", fill=(0, 0, 0), font=ImageFont.load_default())
        out.paste(grid, (0, y + title_h))
        y += grid.height + title_h
    return out


def sample_grid(dm: AffectDataModule, per_class: int = 8, split: str = "train") -> Image.Image:
    """One labelled row per class of ``dm`` with up to ``per_class`` of its images."""
    s = dm.splits[split]
    labels = s.hard_labels
    h, w = (int(v) for v in s.images.shape[1:3])
    rgb = s.images.ndim == 4
    zoom = max(1, math.ceil(64 / max(h, 1)))
    ch, cw, pad, label_w = h * zoom, w * zoom, 2, 80
    names = list(dm.class_names)
    grid = Image.new(
        "RGB",
        (label_w + per_class * (cw + pad) + pad, len(names) * (ch + pad) + pad),
        (255, 255, 255),
    )
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    for row, name in enumerate(names):
        y = pad + row * (ch + pad)
        draw.text((4, y + ch // 2 - 6), name, fill=(0, 0, 0), font=font)
        for col, i in enumerate(np.flatnonzero(labels == row)[:per_class]):
            arr = np.ascontiguousarray(s.images[int(i)])
            tile = Image.fromarray(arr, "RGB" if rgb else "L").convert("RGB")
            if zoom > 1:
                tile = tile.resize((cw, ch), Image.Resampling.NEAREST)
            grid.paste(tile, (label_w + pad + col * (cw + pad), y))
    return grid


def inspect_dataset(cfg: DictConfig, console: Console | None = None) -> dict[str, Any]:
    """Build/open the dataset of ``cfg.data``; write data_stats.json and samples.png."""
    console = console or make_console()
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dm: AffectDataModule = instantiate(cfg.data)
    dm.setup()
    if isinstance(dm, MultiDataModule):
        stats = multi_stats(dm)
        for name, source in dm.sources.items():
            console.print(f"[bold]source {name}[/bold] ({type(source).__name__})")
            print_report(stats["sources"][name], source, console)
        print_pooled(stats, console)
    else:
        stats = dataset_stats(dm)
        print_report(stats, dm, console)
    atomic_write_json(out_dir / "data_stats.json", stats)
    save_sample_grid(dm, out_dir / "samples.png", int(cfg.get("samples_per_class", 8)))
    console.print(f"wrote {out_dir / 'data_stats.json'} and {out_dir / 'samples.png'}")
    return stats


run = inspect_dataset  # the name before fersuite.cli.data
