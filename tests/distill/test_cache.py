"""Cached teacher outputs: equal to live ones, keyed by weights and data, read back by row."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader

from fersuite.distill.adapt import adapt_images, spec_from
from fersuite.distill.cache import TeacherOutputCache, eval_dataset
from fersuite.distill.teacher import load_teacher
from fersuite.modules.distill_module import build_distill_module
from tests.distill.helpers import SMALL_DATA, distill_overrides, write_teacher_ckpt


def _data(cfg_factory, *extra: str):  # type: ignore[no-untyped-def]
    cfg = cfg_factory(["model=lightweight_cnn", *SMALL_DATA, *extra])
    dm = instantiate(cfg.data)
    dm.setup("fit")
    spec = spec_from(dm.image_size, dm.in_chans, dm.mean, dm.std, "data")
    return dm, spec


def test_cached_outputs_equal_live_ones_on_unaugmented_data(cfg_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ckpt = tmp_path / "teacher.ckpt"
    write_teacher_ckpt(ckpt)
    teacher = load_teacher("checkpoint", teacher_ckpt=str(ckpt))
    dm, spec = _data(cfg_factory)
    cache = TeacherOutputCache(tmp_path / "cache", teacher, spec, batch_size=7)
    outputs = cache.get(dm, "train")
    assert len(outputs) == 32 and cache.computed == 1
    # live pass over the same rows in another order: looked up by the batches' index
    loader = DataLoader(
        eval_dataset(dm, "train"),
        batch_size=10,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    for batch in loader:
        live = teacher(adapt_images(batch["image"], spec, teacher.input_spec))
        cached = outputs.lookup(batch["index"])
        assert torch.allclose(cached.expression, live.expression, atol=1e-5)
        assert torch.allclose(cached.valence, live.valence, atol=1e-5)
        assert torch.allclose(cached.arousal, live.arousal, atol=1e-5)
    with pytest.raises(IndexError, match="outside the cached split"):
        outputs.lookup(torch.tensor([32]))


def test_cache_is_reused_and_invalidated_by_weights_and_data(cfg_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ckpt = tmp_path / "teacher.ckpt"
    write_teacher_ckpt(ckpt, seed=0)
    dm, spec = _data(cfg_factory)
    first = TeacherOutputCache(tmp_path / "cache", load_teacher(teacher_ckpt=str(ckpt)), spec)
    a = first.get(dm, "train")

    again = TeacherOutputCache(tmp_path / "cache", load_teacher(teacher_ckpt=str(ckpt)), spec)
    b = again.get(dm, "train")
    assert (again.computed, again.loaded) == (0, 1)
    assert torch.equal(a.expression, b.expression)

    write_teacher_ckpt(ckpt, seed=1)  # same path, new weights
    changed = TeacherOutputCache(tmp_path / "cache", load_teacher(teacher_ckpt=str(ckpt)), spec)
    c = changed.get(dm, "train")
    assert (changed.computed, changed.loaded) == (1, 0)
    assert not torch.allclose(a.expression, c.expression)
    key_a, key_c = first.key(dm, "train"), changed.key(dm, "train")
    assert key_a["teacher_sha256"] != key_c["teacher_sha256"]
    assert first.path(key_a) != changed.path(key_c)

    other_dm, _ = _data(cfg_factory, "data.seed=5")  # other images, same teacher
    other = TeacherOutputCache(tmp_path / "cache", load_teacher(teacher_ckpt=str(ckpt)), spec)
    other.get(other_dm, "train")
    assert other.computed == 1
    files = sorted((tmp_path / "cache" / "distill").glob("teacher-train-*.npz"))
    assert len(files) == 3


def test_unreadable_cache_is_recomputed(cfg_factory, tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    ckpt = tmp_path / "teacher.ckpt"
    write_teacher_ckpt(ckpt)
    dm, spec = _data(cfg_factory)
    cache = TeacherOutputCache(tmp_path / "cache", load_teacher(teacher_ckpt=str(ckpt)), spec)
    good = cache.get(dm, "val")
    path = cache.path(cache.key(dm, "val"))
    path.write_bytes(b"truncated")
    with caplog.at_level(logging.WARNING, logger="fersuite.distill.cache"):
        again = TeacherOutputCache(tmp_path / "cache", cache.teacher, spec)
        out = again.get(dm, "val")
    assert again.computed == 1 and "unreadable" in caplog.text
    assert torch.allclose(out.expression, good.expression)
    with pytest.raises(FileNotFoundError, match="missing after the writer rank"):
        path.unlink()
        again.get(dm, "val", compute=False)


def test_cached_training_never_runs_the_teacher_on_batches(cfg_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ckpt = tmp_path / "teacher.ckpt"
    write_teacher_ckpt(ckpt)
    cfg = cfg_factory(distill_overrides(ckpt, "distill.teacher_outputs=cached"))
    dm = instantiate(cfg.data)
    module = build_distill_module(cfg, dm)
    calls: list[int] = []
    module.teacher.net.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(module, datamodule=dm)
    assert any(k.startswith("train/loss_kd") for k in trainer.callback_metrics)
    trainer.test(module, datamodule=dm)
    # one pass per split (train 32, val 16, test 16 rows), nothing per training batch/epoch
    assert sum(calls) == 32 + 16 + 16
    assert module.cache is not None and module.cache.computed == 3
    files = sorted((Path(cfg.paths.cache_dir) / "distill").glob("teacher-*.npz"))
    assert [f.name.split("-")[1] for f in files] == sorted(["test", "train", "val"])
    assert "test/gap_acc" in trainer.callback_metrics
