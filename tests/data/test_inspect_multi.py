"""``fersuite-data data=multi``: each source's stats in its own classes, the pooled counts in the
multi classes, and one titled grid per source (it used to crash with ``KeyError: 'train'``)."""

from __future__ import annotations

import json
from pathlib import Path

from hydra.utils import instantiate
from PIL import Image

from fersuite.data.inspect import inspect_dataset, sample_grid
from fersuite.data.synthetic_datamodule import SyntheticDataModule
from tests.conftest import compose_train

SIZES = [
    f"data.sources.{s}.{k}={n}"
    for s in ("synth_a", "synth_b")
    for k, n in (("train_size", 64), ("val_size", 16), ("test_size", 16), ("cache_dir", "null"))
]


def test_multi_stats_per_source_and_pooled(tmp_path: Path) -> None:
    cfg = compose_train(["data=multi", "data.num_workers=0", *SIZES], tmp_path)
    stats = inspect_dataset(cfg)
    out = Path(cfg.paths.output_dir)
    assert json.loads((out / "data_stats.json").read_text()) == stats

    a, b = stats["sources"]["synth_a"], stats["sources"]["synth_b"]
    assert a["num_classes"] == 8 and b["class_names"] == [
        "neutral", "happy", "sad", "surprise", "fear", "anger"
    ]  # fmt: skip
    assert a["image_shape"] == [48, 48] and b["image_shape"] == [32, 32]
    for split in ("train", "val", "test"):
        pooled = stats["splits"][split]
        assert pooled["size"] == a["splits"][split]["size"] + b["splits"][split]["size"]
        for name in stats["class_names"]:
            own = [s["splits"][split]["class_counts"].get(name, 0) for s in (a, b)]
            assert pooled["class_counts"][name] == sum(own), (split, name)
    # synth_b has no disgust: the pooled disgust count is synth_a's alone.
    assert (
        stats["splits"]["train"]["class_counts"]["disgust"]
        == (a["splits"]["train"]["class_counts"]["disgust"])
    )

    # One grid per source, stacked: as tall as both grids (plus their title lines).
    grid = Image.open(out / "samples.png")
    heights = []
    for node in cfg.data.sources.values():
        dm = instantiate(node)
        assert isinstance(dm, SyntheticDataModule)
        dm.setup()
        heights.append(sample_grid(dm).height)
    assert min(heights) > 0 and grid.height > sum(heights)
