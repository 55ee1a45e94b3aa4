"""data.augment.mixup / cutmix: soft targets that sum to one, VA mixed with the same weight,
pixels that match the weight, reproducible draws, and the modules that accept them."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from fersuite.data.mixing import BatchMixing, soft_targets
from fersuite.errors import ConfigError
from fersuite.losses import AffectLoss
from fersuite.models.registry import create_model
from fersuite.modules.affect_module import AffectModule, mixing_from_config

N, C = 8, 8


def _batch(n: int = N, size: int = 12) -> dict[str, torch.Tensor]:
    # Sample i: every pixel equals i, label i, valence i/10, arousal -i/10; odd rows lack VA.
    image = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, size, size)
    return {
        "image": image.contiguous(),
        "expression": torch.arange(n) % C,
        "valence": torch.arange(n, dtype=torch.float32) / 10,
        "arousal": -torch.arange(n, dtype=torch.float32) / 10,
        "va_mask": torch.arange(n) % 2 == 0,
    }


def _partner(mixed: dict[str, torch.Tensor], i: int) -> int:
    """The sample that row i was mixed with: the other class with weight in its target."""
    row = mixed["expression"][i].clone()
    row[i] = 0
    return int(row.argmax()) if row.max() > 0 else i


@pytest.mark.parametrize("mode", ["mixup", "cutmix"])
def test_targets_are_distributions_and_va_uses_the_same_weight(mode: str) -> None:
    mixing = BatchMixing(**{mode: 1.0}, num_classes=C, seed=3)
    batch = _batch()
    mixed = mixing(batch, epoch=0, batch_idx=5)
    target = mixed["expression"]
    assert target.shape == (N, C) and target.dtype == torch.float32
    torch.testing.assert_close(target.sum(dim=1), torch.ones(N))
    assert (target >= 0).all()
    mixed_rows = 0
    for i in range(N):
        j = _partner(mixed, i)
        lam = float(target[i, i])  # the weight left on row i's own label
        if j == i:
            assert lam == pytest.approx(1.0)
            continue
        mixed_rows += 1
        assert float(target[i, j]) == pytest.approx(1 - lam, abs=1e-6)
        assert float(mixed["valence"][i]) == pytest.approx(lam * i / 10 + (1 - lam) * j / 10)
        assert float(mixed["arousal"][i]) == pytest.approx(-(lam * i + (1 - lam) * j) / 10)
        # VA is valid only where both samples had it.
        assert bool(mixed["va_mask"][i]) == (i % 2 == 0 and j % 2 == 0)
        pixels = mixed["image"][i]
        if mode == "mixup":  # every pixel is the same blend
            torch.testing.assert_close(pixels, torch.full_like(pixels, lam * i + (1 - lam) * j))
        else:  # the share of pixels kept from row i is the label weight
            own = float((pixels == i).float().mean())
            assert own == pytest.approx(lam, abs=1e-6)
            assert bool(((pixels == i) | (pixels == j)).all())
    assert mixed_rows > 0
    assert batch["image"][1].eq(1).all(), "the input batch must not be modified"


def test_soft_targets_stay_distributions() -> None:
    probs = torch.softmax(torch.randn(N, C), dim=1)
    batch = _batch() | {"expression": probs}
    mixed = BatchMixing(mixup=0.4, num_classes=C, seed=0)(batch, 0, 0)
    torch.testing.assert_close(mixed["expression"].sum(dim=1), torch.ones(N))
    with pytest.raises(ValueError, match="5 classes"):
        soft_targets(torch.ones(2, 5) / 5, C)


def test_draws_depend_only_on_seed_epoch_and_batch() -> None:
    mixing = BatchMixing(mixup=0.4, cutmix=1.0, num_classes=C, seed=7)
    a = mixing(_batch(), epoch=2, batch_idx=3)
    b = mixing(_batch(), epoch=2, batch_idx=3)
    for key in a:
        assert torch.equal(a[key], b[key])
    others = [mixing(_batch(), epoch=2, batch_idx=k)["expression"] for k in range(4, 12)]
    assert any(not torch.equal(a["expression"], o) for o in others)
    # Both on: each batch uses one of the two.
    modes = {mixing.draw(mixing.rng(0, k, 0), N)[0] for k in range(40)}
    assert modes == {"mixup", "cutmix"}


def test_off_by_default_and_negative_alpha_refused() -> None:
    cfg = OmegaConf.create({"seed": 1, "data": {"augment": {"mixup": 0.0, "cutmix": 0.0}}})
    assert mixing_from_config(cfg, C) is None
    cfg.data.augment.cutmix = 1.0
    mixing = mixing_from_config(cfg, C)
    assert mixing is not None and mixing.cutmix == 1.0 and mixing.seed == 1
    with pytest.raises(ValueError, match=r"data\.augment\.mixup"):
        BatchMixing(mixup=-1.0, num_classes=C)


def test_the_training_step_mixes_and_the_ce_loss_takes_soft_targets() -> None:
    torch.manual_seed(0)
    net = create_model("lightweight_cnn", num_classes=C, in_chans=1, input_size=48, width_mult=0.5)
    seen: list[dict[str, torch.Tensor]] = []

    class Spy(AffectLoss):
        def forward(self, out, batch):  # type: ignore[no-untyped-def]
            seen.append(batch)
            return super().forward(out, batch)

    module = AffectModule(
        net=net,
        loss=Spy(),
        optimizer=partial(torch.optim.SGD, lr=0.0),
        class_names=[str(i) for i in range(C)],
        mixing=BatchMixing(mixup=1.0, num_classes=C, seed=0),
    )
    batch = _batch(size=48)
    batch["expression"] = torch.arange(N) % C
    loss = module.training_step(batch, 0)
    assert torch.isfinite(loss)
    assert seen[-1]["expression"].shape == (N, C)
    logits = module.last_output.expression.detach()  # scored on the mixed images
    expected = -(seen[-1]["expression"] * torch.log_softmax(logits, 1)).sum(1).mean()
    ce = module.last_loss_terms["loss_ce"].detach()
    assert float(ce) == pytest.approx(float(expected), rel=1e-5)


def test_cached_distillation_refuses_mixing(tmp_path: Path) -> None:
    from fersuite.distill.teacher import load_teacher
    from fersuite.losses.distill import DistillationLoss
    from fersuite.modules.distill_module import DistillationModule
    from tests.distill.helpers import write_teacher_ckpt

    write_teacher_ckpt(tmp_path / "teacher.ckpt")

    with pytest.raises(ConfigError, match="teacher_outputs=live"):
        DistillationModule(
            net=create_model("lightweight_cnn", num_classes=C, in_chans=1, input_size=48),
            loss=DistillationLoss(),
            optimizer=partial(torch.optim.SGD, lr=0.0),
            teacher=load_teacher(teacher_ckpt=str(tmp_path / "teacher.ckpt")),
            teacher_outputs="cached",
            cache_dir="x",
            class_names=[str(i) for i in range(C)],
            mixing=BatchMixing(mixup=0.2, num_classes=C),
        )


def test_config_keys_reach_the_module(cfg_factory: Any) -> None:
    from hydra.utils import instantiate

    from fersuite.config import validate_config
    from fersuite.runs.builders import build_module

    cfg = cfg_factory(["data.augment.mixup=0.2", "data.augment.cutmix=1.0", "seed=5"])
    validate_config(cfg)
    dm = instantiate(cfg.data)
    module = build_module(cfg, dm)
    assert module.mixing == BatchMixing(0.2, 1.0, dm.num_classes, 5)
    with pytest.raises(ConfigError, match=r"^data\.augment\.cutmix=-1"):
        validate_config(cfg_factory(["data.augment.cutmix=-1"]))
