"""The synthetic DataModule: cache, batches, transforms, sampler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fersuite.data.synthetic_datamodule import SyntheticDataModule
from fersuite.data.transforms import MatchChannels


def _dm(tmp_path: Path, **kw: object) -> SyntheticDataModule:
    args: dict[str, object] = dict(
        train_size=64,
        val_size=16,
        test_size=16,
        num_workers=0,
        batch_size=16,
        cache_dir=str(tmp_path / "cache"),
    )
    args.update(kw)
    return SyntheticDataModule(**args)  # type: ignore[arg-type]


def test_batches_have_the_contract_keys(tmp_path: Path) -> None:
    dm = _dm(tmp_path, image_size=64, in_chans=3)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (16, 3, 64, 64)
    assert batch["image"].dtype == torch.float32
    assert batch["expression"].dtype == torch.long
    assert set(batch) >= {"image", "expression", "valence", "arousal", "va_mask", "index"}
    assert batch["valence"].abs().max() <= 1.0
    assert dm.num_classes == 8 and dm.has_va


def test_cache_is_written_once_and_reused(tmp_path: Path) -> None:
    dm = _dm(tmp_path)
    dm.setup()
    files = sorted((tmp_path / "cache" / "synthetic").glob("*.npz"))
    assert len(files) == 3
    stamp = [f.stat().st_mtime_ns for f in files]
    dm2 = _dm(tmp_path)
    dm2.setup()
    assert [f.stat().st_mtime_ns for f in files] == stamp
    np.testing.assert_array_equal(dm.splits["train"].images, dm2.splits["train"].images)
    assert not list((tmp_path / "cache" / "synthetic").glob("*.tmp"))


def test_corrupt_cache_is_regenerated(tmp_path: Path) -> None:
    dm = _dm(tmp_path)
    dm.setup()
    target = next((tmp_path / "cache" / "synthetic").glob("train-*.npz"))
    target.write_bytes(b"not a zip")
    dm2 = _dm(tmp_path)
    dm2.setup()
    np.testing.assert_array_equal(dm.splits["train"].images, dm2.splits["train"].images)


def test_eval_transform_is_deterministic(tmp_path: Path) -> None:
    dm = _dm(tmp_path)
    dm.setup()
    ds = dm.dataset("val")
    assert torch.equal(ds[0]["image"], ds[0]["image"])
    assert ds[0]["image"].min() >= -1.0 and ds[0]["image"].max() <= 1.0


def test_weighted_sampler_and_class_weights(tmp_path: Path) -> None:
    dm = _dm(tmp_path, sampler="weighted")
    dm.setup()
    w = dm.class_weights()
    assert w.shape == (8,) and torch.isfinite(w).all()
    assert w.mean().item() == pytest.approx(1.0)
    loader = dm.train_dataloader()
    assert type(loader.sampler).__name__ == "ResumableSampler"
    assert loader.sampler.weights is not None  # weighted draws, with replacement


def test_match_channels_gray_rgb() -> None:
    gray = torch.randint(0, 256, (1, 5, 5), dtype=torch.uint8)
    rgb = MatchChannels(3)(gray)
    assert rgb.shape == (3, 5, 5) and torch.equal(rgb[0], rgb[2])
    back = MatchChannels(1)(rgb.contiguous())
    assert torch.equal(back, gray)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"sampler": "balanced"}, "sampler"),
        ({"in_chans": 2}, "in_chans"),
        ({"train_size": 0}, "train_size"),
        ({"augment": {"hflip": 2.0}}, "hflip"),
        ({"std": [0.0]}, "std"),
    ],
)
def test_bad_datamodule_arguments(tmp_path: Path, kw: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _dm(tmp_path, **kw)
