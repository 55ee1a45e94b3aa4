"""Optimizer groups: no weight decay on norms, biases and embeddings (timm's rule)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from fersuite.runs.builders import build_module
from tests.distill.helpers import distill_overrides, write_teacher_ckpt


def _decay_of(optimizer: torch.optim.Optimizer) -> dict[int, float]:
    out: dict[int, float] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            assert id(p) not in out, "a parameter is in two groups"
            out[id(p)] = float(group["weight_decay"])
    return out


def _check(
    module: nn.Module,
    net_prefix: str,
    optimizer: torch.optim.Optimizer,
    wd: float,
    embeddings: set[str],
) -> None:
    decay = _decay_of(optimizer)
    trainable = {n: p for n, p in module.named_parameters() if p.requires_grad}
    assert set(decay) == {id(p) for p in trainable.values()}
    seen_embeddings = set()
    n_zero = n_decay = 0
    for name, p in trainable.items():
        short = name.removeprefix(net_prefix)
        if p.ndim <= 1 or short in embeddings:
            assert decay[id(p)] == 0.0, name
            n_zero += 1
            seen_embeddings |= {short} & embeddings
        else:
            assert decay[id(p)] == pytest.approx(wd), name
            n_decay += 1
    assert seen_embeddings == embeddings
    assert n_zero > 0 and n_decay > 0


@pytest.mark.parametrize(
    ("model", "optimizer", "embeddings"),
    [
        (["model=mit_fer"], "adamw", set()),  # MiT has no position embeddings
        (["model=timm"], "adamw", set()),
        (
            [
                "model=timm",
                "model.name=vit_tiny_patch16_224",
                "model.input_size=224",
                "model.in_chans=3",
                "data.image_size=224",
                "data.in_chans=3",
            ],
            "adamw",
            {"backbone.pos_embed", "backbone.cls_token"},
        ),
        (["model=mit_fer"], "sgd", set()),
    ],
)
def test_norms_biases_and_embeddings_get_no_weight_decay(
    cfg_factory, model: list[str], optimizer: str, embeddings: set[str]
) -> None:  # type: ignore[no-untyped-def]
    cfg = cfg_factory([*model, f"optimizer={optimizer}", "scheduler=none"])
    wd = float(cfg.optimizer.weight_decay)
    assert wd > 0
    dm = instantiate(cfg.data)
    module = build_module(cfg, dm)
    opt = module.configure_optimizers()
    assert type(opt).__name__ == {"adamw": "AdamW", "sgd": "SGD"}[optimizer]
    _check(module, "net.", opt, wd, embeddings)


def test_distillation_student_uses_the_same_groups(cfg_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    teacher = tmp_path / "teacher.ckpt"
    write_teacher_ckpt(teacher)
    cfg = cfg_factory(distill_overrides(teacher, "scheduler=none"))
    module = build_module(cfg, instantiate(cfg.data))
    opt = module.configure_optimizers()
    _check(module, "net.", opt, float(cfg.optimizer.weight_decay), set())


def test_a_submodule_no_weight_decay_list_is_honoured_under_its_full_name() -> None:
    from fersuite.modules.optim import weight_decay_param_groups

    class Inner(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rel_bias = nn.Parameter(torch.zeros(4, 4))
            self.table = nn.Embedding(5, 3)
            self.proj = nn.Linear(3, 3)

        def no_weight_decay(self) -> set[str]:
            return {"rel_bias", "table"}  # a parameter and a whole submodule

    outer = nn.Sequential(nn.Linear(2, 2), Inner())
    opt = torch.optim.AdamW(weight_decay_param_groups(outer), lr=1e-3, weight_decay=0.3)
    decay = _decay_of(opt)
    names = {n: decay[id(p)] for n, p in outer.named_parameters()}
    assert names == {
        "0.weight": 0.3,
        "0.bias": 0.0,
        "1.rel_bias": 0.0,
        "1.table.weight": 0.0,
        "1.proj.weight": 0.3,
        "1.proj.bias": 0.0,
    }
    # weight_decay=0 configured: every group ends up at 0
    opt0 = torch.optim.SGD(weight_decay_param_groups(outer), lr=0.1)
    assert set(_decay_of(opt0).values()) == {0.0}
