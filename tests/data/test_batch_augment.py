"""data.augment.device=batch: uint8 batches from the loader, the augmentation on the device,
geometry checked against reference ops, parameters from the per-sample seeds only."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import lightning.pytorch as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fersuite.data.batch_augment import AUG_PARAMS, BatchAugment, draw_params
from fersuite.data.synthetic_datamodule import SyntheticDataModule
from fersuite.data.transforms import AugmentConfig

OFF = {"hflip": 0.0, "rotation": 0.0, "crop_scale": (1.0, 1.0), "brightness": 0.0,
       "contrast": 0.0}  # fmt: skip


def _dm(size: int = 32, chans: int = 1, **augment: object) -> SyntheticDataModule:
    dm = SyntheticDataModule(
        train_size=24, val_size=8, test_size=8, batch_size=8, num_workers=0, image_size=size,
        in_chans=chans, mean=[0.5] * chans, std=[0.25] * chans, render_size=size,
        augment={"device": "batch", **augment},
    )  # fmt: skip
    dm.setup("fit")
    return dm


def _params(**values: float) -> torch.Tensor:
    row = dict.fromkeys(AUG_PARAMS, 0.0) | {"crop_w": 1.0, "crop_h": 1.0, "flip": 1.0}
    row |= {"brightness": 1.0, "contrast": 1.0} | values
    return torch.tensor([[row[k] for k in AUG_PARAMS]], dtype=torch.float32)


def test_the_loader_yields_uint8_batches_and_parameters() -> None:
    dm = _dm()
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (8, 1, 32, 32)
    assert batch["aug"].shape == (8, len(AUG_PARAMS))
    assert batch["expression"].shape == (8,) and batch["va_mask"].dtype == torch.bool
    out = dm.on_after_batch_transfer(batch, 0)
    assert out["image"].dtype == torch.float32 and out["image"].shape == (8, 1, 32, 32)
    assert "aug" not in out
    # The same rows, read one by one, are the same uint8 pixels.
    ds = dm.dataset("train")
    rows = batch["index"].tolist()
    singles = torch.stack([ds[i]["image"] for i in rows])
    assert torch.equal(singles, batch["image"])
    # Validation and test keep the per-sample evaluation transform.
    val = next(iter(dm.val_dataloader()))
    assert val["image"].dtype == torch.float32 and "aug" not in val


def test_no_augmentation_is_the_evaluation_transform() -> None:
    dm = _dm(**OFF)
    batch = next(iter(dm.train_dataloader()))
    out = dm.on_after_batch_transfer(batch, 0)["image"]
    ev = dm.dataset("train", train=False)
    expected = torch.stack([ev[i]["image"] for i in batch["index"].tolist()])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_flip_and_centre_crop_match_reference_ops() -> None:
    x = torch.randint(0, 256, (1, 1, 16, 16), dtype=torch.uint8)
    aug = BatchAugment(16, [0.0], [1.0], channels=1)
    ref = x.float() / 255
    torch.testing.assert_close(aug(x, _params(flip=-1.0)), torch.flip(ref, dims=(-1,)))
    # A centred half-size crop resized back to 16x16 is bilinear upsampling of the centre
    # (the outermost output pixels differ: the grid reads the real neighbours outside the
    # crop, interpolate repeats the crop's edge).
    crop = ref[..., 4:12, 4:12]
    up = F.interpolate(crop, size=(16, 16), mode="bilinear", align_corners=False)
    out = aug(x, _params(crop_w=0.5, crop_h=0.5))
    torch.testing.assert_close(out[..., 1:-1, 1:-1], up[..., 1:-1, 1:-1], atol=1e-5, rtol=0)
    # 90 degrees is a transpose-and-flip of the pixel grid.
    rot = aug(x, _params(angle=np.pi / 2))
    torch.testing.assert_close(rot, torch.rot90(ref, k=1, dims=(-2, -1)), atol=1e-5, rtol=0)


def test_colour_channels_and_erasing() -> None:
    x = torch.full((1, 1, 8, 8), 100, dtype=torch.uint8)
    x[..., :4] = 200
    base = x.float() / 255
    aug = BatchAugment(8, [0.0], [1.0], channels=1, erasing=True)
    bright = aug(x, _params(brightness=1.2))
    torch.testing.assert_close(bright, (base * 1.2).clamp(0, 1))
    flat = aug(x, _params(contrast=0.0))  # no contrast: every pixel at the image's mean
    torch.testing.assert_close(flat, torch.full_like(base, float(base.mean())))
    box = aug(x, _params(erase=1.0, erase_x0=0.5, erase_y0=0.25, erase_x1=1.0, erase_y1=0.75))
    assert (box[..., 2:6, 4:] == 0).all() and torch.equal(box[..., :2, :], base[..., :2, :])
    rgb = BatchAugment(8, [0.5, 0.5, 0.5], [0.5, 0.5, 0.5], channels=3)(x, _params())
    assert rgb.shape == (1, 3, 8, 8) and torch.equal(rgb[:, 0], rgb[:, 2])


def test_parameters_come_from_the_seeds_within_the_configured_ranges() -> None:
    cfg = AugmentConfig(hflip=0.5, rotation=10.0, crop_scale=(0.8, 1.0), brightness=0.2,
                        contrast=0.3, erasing=0.5)  # fmt: skip
    seeds = list(range(1000, 1400))
    p = draw_params(cfg, seeds)
    assert torch.equal(p[100:110], draw_params(cfg, seeds[100:110]))  # row i: seed i only
    col = {k: p[:, i] for i, k in enumerate(AUG_PARAMS)}
    area = col["crop_w"] * col["crop_h"]
    assert float(area.min()) >= 0.8 * 0.99 and float(area.max()) <= 1.0
    assert float(col["angle"].abs().max()) <= np.radians(10.0) + 1e-6
    assert 0.35 < float((col["flip"] < 0).float().mean()) < 0.65
    assert float((col["brightness"] - 1).abs().max()) <= 0.2 + 1e-6
    assert float((col["contrast"] - 1).abs().max()) <= 0.3 + 1e-6
    assert 0.35 < float(col["erase"].mean()) < 0.65
    # The crop stays inside the image.
    assert bool(((col["crop_cx"].abs() + col["crop_w"]) <= 1 + 1e-6).all())


def test_resumed_epochs_repeat_the_same_augmented_batches() -> None:
    torch.manual_seed(3)
    a = _dm(erasing=0.5)
    first = [a.on_after_batch_transfer(b, 0)["image"] for b in a.train_dataloader()]
    torch.manual_seed(3)
    b = _dm(erasing=0.5)
    loader = b.train_dataloader()
    loader.sampler.load_state_dict({"epoch": 0, "start": 8})  # resume after one batch
    again = [b.on_after_batch_transfer(x, 0)["image"] for x in loader]
    assert len(again) == len(first) - 1
    for x, y in zip(first[1:], again, strict=True):
        assert torch.equal(x, y)


def test_training_runs_on_batched_augmentation(tmp_path: Path) -> None:
    from fersuite.losses import AffectLoss
    from fersuite.models.registry import create_model
    from fersuite.modules.affect_module import AffectModule

    dm = _dm(size=48)
    seen: list[torch.Tensor] = []
    net = create_model("lightweight_cnn", num_classes=8, in_chans=1, input_size=48, width_mult=0.5)
    net.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    module = AffectModule(net=net, loss=AffectLoss(), optimizer=partial(torch.optim.SGD, lr=0.01),
                          class_names=dm.class_names)  # fmt: skip
    trainer = L.Trainer(
        default_root_dir=tmp_path, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, max_epochs=1,
        num_sanity_val_steps=0, limit_val_batches=1,
    )  # fmt: skip
    trainer.fit(module, datamodule=dm)
    assert seen and all(x.dtype == torch.float32 for x in seen)
    assert float(seen[0].min()) < 0  # normalised: (x - 0.5) / 0.25


@pytest.mark.parametrize("bad", ["gpu", "Batch"])
def test_bad_device_is_one_line(bad: str) -> None:
    with pytest.raises(ValueError, match=r"^data\.augment\.device="):
        AugmentConfig(device=bad)
