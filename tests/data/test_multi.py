"""``data=multi``: two synthetic domains (one with 6 classes and no VA) trained on at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict

from fersuite.checkpoint import META_KEY, read_checkpoint
from fersuite.config import validate_config
from fersuite.data.base import AffectDataModule, ArraySplit
from fersuite.data.multi import MultiDataModule
from fersuite.data.record import recorded_data_config
from fersuite.data.synthetic_datamodule import SyntheticDataModule
from fersuite.errors import ConfigError
from fersuite.labels import CANONICAL_CLASSES
from tests.conftest import TINY
from tests.data.helpers import instantiation_config_error

SIX = ("neutral", "happy", "sad", "surprise", "fear", "anger")
LOADER: dict[str, Any] = {"num_workers": 0, "batch_size": 16, "image_size": 40}


def _synth(**kw: Any) -> SyntheticDataModule:
    sizes = {"train_size": 64, "val_size": 32, "test_size": 32}
    return SyntheticDataModule(**{**sizes, **LOADER, **kw})


def _multi(sampling: Any = "proportional", **kw: Any) -> MultiDataModule:
    sources = {
        "a": _synth(seed=0, render_size=48),
        "b": _synth(seed=1, render_size=32, difficulty=1.5, classes=list(SIX), with_va=False),
    }
    dm = MultiDataModule(sources=sources, sampling=sampling, **{**LOADER, **kw})
    dm.setup("fit")
    return dm


def test_a_source_keeps_only_its_classes_and_drops_va() -> None:
    full, part = _synth(), _synth(classes=["Angry", "happiness", "neutral"], with_va=False)
    full.setup("fit")
    part.setup("fit")
    assert part.class_names == ("neutral", "happy", "anger") and not part.has_va
    tr, kept = full.splits["train"], part.splits["train"]
    rows = np.flatnonzero(np.isin(tr.expression, [0, 1, 6]))
    assert np.array_equal(kept.images, tr.images[rows])
    assert np.array_equal(
        np.array(part.class_names)[kept.expression],
        np.array(CANONICAL_CLASSES)[tr.expression[rows]],
    )
    assert kept.valence is None
    with pytest.raises(ConfigError, match="'grumpy'"):
        _synth(classes=["grumpy"])


def test_batches_carry_source_class_mask_and_va_mask_in_one_input_spec() -> None:
    dm = _multi()
    assert dm.class_names == CANONICAL_CLASSES and dm.has_va and dm.source_has_va == (True, False)
    # the two domains differ (size), the batches do not: every image is 1 x 40 x 40
    a, b = dm.sources["a"].splits["train"].images, dm.sources["b"].splits["train"].images
    assert a.shape[1:] == (48, 48) and b.shape[1:] == (32, 32)
    n_a = len(a)
    ds = dm.dataset("val")
    for i in (0, len(ds) - 1):
        item = ds[i]
        assert item["image"].shape == (1, 40, 40)
    batch = next(iter(dm.train_dataloader()))
    src = batch["source"]
    assert set(src.tolist()) <= {0, 1}
    b_mask = torch.tensor([c in SIX for c in CANONICAL_CLASSES])
    assert torch.equal(batch["class_mask"][src == 1], b_mask.expand(int((src == 1).sum()), -1))
    assert bool(batch["class_mask"][src == 0].all())
    assert not bool(batch["va_mask"][src == 1].any()) and bool(batch["va_mask"][src == 0].all())
    # labels mapped by name: a source-b label is its class's canonical index
    idx = batch["index"][src == 1] - n_a
    own = dm.sources["b"].splits["train"].expression[idx.numpy()]
    names = np.array(SIX)[own]
    assert [CANONICAL_CLASSES[i] for i in batch["expression"][src == 1].tolist()] == list(names)


def _epoch_shares(dm: MultiDataModule, epochs: int = 3) -> np.ndarray:
    sampler = dm.train_dataloader().sampler
    n_a = len(dm.sources["a"].splits["train"])
    counts = np.zeros(2)
    for e in range(epochs):
        sampler.set_epoch(e)
        idx = np.array([int(i) for i in sampler])
        counts += [(idx < n_a).sum(), (idx >= n_a).sum()]
    return counts / counts.sum()


@pytest.mark.parametrize(
    ("sampling", "expected"),
    [("proportional", None), ("balanced", (0.5, 0.5)), ({"a": 1.0, "b": 3.0}, (0.25, 0.75))],
)
def test_sampling_weights_over_an_epoch(sampling: Any, expected: Any) -> None:
    torch.manual_seed(0)  # the sampler's seed is the process seed
    dm = _multi(sampling)
    sizes = dm.source_sizes()
    if expected is None:  # a permutation: every sample exactly once
        expected = np.array([sizes["a"], sizes["b"]]) / sum(sizes.values())
        sampler = dm.train_dataloader().sampler
        assert sorted(int(i) for i in sampler) == list(range(sum(sizes.values())))
    assert sizes["a"] != sizes["b"]  # proportional and balanced differ
    # 40 epochs of ~100 draws: the share's standard error is under 0.01
    assert _epoch_shares(dm, 40) == pytest.approx(np.array(expected), abs=0.04)


def test_the_sampler_resumes_mid_epoch() -> None:
    dm = _multi("balanced")
    full = [int(i) for i in dm.train_dataloader().sampler]
    dm.resume_train_sampler({"seed": dm.train_dataloader().sampler.seed, "epoch": 0, "start": 7})
    resumed = [int(i) for i in dm.train_dataloader().sampler]
    assert resumed == full[7:]


def test_explicit_classes_and_refusals() -> None:
    dm = _multi(
        classes=["anger", "happy", "neutral", "sad", "surprise", "fear", "disgust", "contempt"]
    )
    assert dm.class_names[0] == "anger"
    b = dm.dataset("train", train=False)
    item = b[len(dm.sources["a"].splits["train"])]  # source b's first sample
    assert (
        dm.class_names[int(item["expression"])]
        == SIX[int(dm.sources["b"].splits["train"].expression[0])]
    )
    with pytest.raises(ConfigError, match=r"data\.sources\.a has class"):
        _multi(classes=list(SIX))
    with pytest.raises(ConfigError, match=r"data\.sampling: no weight for b"):
        _multi({"a": 1.0})
    with pytest.raises(ConfigError, match=r"data\.sampling='uniform'"):
        _multi("uniform")


class _Odd(AffectDataModule):
    class_names = ("neutral", "confused")

    def load_splits(self) -> dict[str, ArraySplit]:
        split = ArraySplit(np.zeros((2, 8, 8), np.uint8), np.array([0, 1]))
        return {"train": split, "val": split, "test": split}


def test_an_unknown_class_name_is_refused_in_one_line() -> None:
    dm = MultiDataModule(sources={"a": _synth(), "odd": _Odd(num_workers=0)}, num_workers=0)
    with pytest.raises(ConfigError) as err:
        dm.setup("fit")
    msg = str(err.value)
    assert "\n" not in msg and "data.sources.odd" in msg and "'confused'" in msg


SOURCES = [
    f"data.sources.{s}.{k}={n}"
    for s in ("synth_a", "synth_b")
    for k, n in (("train_size", 96), ("val_size", 48), ("test_size", 48))
]


def test_the_config_builds_checked_sources(cfg_factory) -> None:  # type: ignore[no-untyped-def]
    cfg = cfg_factory(["data=multi", *SOURCES])
    validate_config(cfg)
    dm = instantiate(cfg.data)
    assert dm.source_names == ("synth_a", "synth_b")
    assert dm.sources["synth_b"].class_names == SIX and not dm.sources["synth_b"].has_va
    bad = cfg_factory(["data=multi", "+data.sources.synth_b.sed=1"])
    message = instantiation_config_error(bad.data)  # the apps report it, one line
    assert message.startswith("data.sources.synth_b.sed is not a key of SyntheticDataModule")


def test_a_tiny_multi_run_logs_per_source_metrics(cfg_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from fersuite.training.run import train

    overrides = [a for a in TINY if not a.startswith("data.")]
    cfg = cfg_factory(
        [
            *overrides,
            "data=multi",
            *SOURCES,
            "data.num_workers=0",
            "data.batch_size=32",
            "logger=csv",
            "model=lightweight_cnn",
            "model.width_mult=0.5",
            "callbacks.efficiency=null",
            "callbacks.reports=null",
        ]
    )
    with open_dict(cfg):
        del cfg["hydra"]
    train(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for stage in ("val", "test"):
        assert f"{stage}/acc" in metrics  # the pooled names are unchanged
        for source in ("synth_a", "synth_b"):
            for key in ("acc", "balanced_acc", "f1_macro"):
                assert 0.0 <= metrics[f"{stage}/{source}/{key}"] <= 1.0
        assert f"{stage}/synth_a/valence_ccc" in metrics
        assert f"{stage}/synth_b/valence_ccc" not in metrics
    print({k: round(v, 4) for k, v in metrics.items() if k.count("/") == 2})
    # Its record names data=multi, whose sources are not rebuilt: evaluating it (or its int8
    # export's calibration) without a named test set is refused, never guessed.
    ckpt = next((tmp_path / "run" / "checkpoints").glob("best-*.ckpt"))
    record = read_checkpoint(ckpt)[META_KEY].get("training_data")
    with pytest.raises(ConfigError, match="was trained on data=multi"):
        recorded_data_config(record, str(ckpt))


def test_distillation_on_several_datasets_is_refused_in_one_line(cfg_factory) -> None:  # type: ignore[no-untyped-def]
    from fersuite.modules.distill_module import build_distill_module

    cfg = cfg_factory(["data=multi", "task=distill", "trainer.max_epochs=1"])
    with pytest.raises(ConfigError, match="task=distill does not train on data=multi yet"):
        build_distill_module(cfg, instantiate(cfg.data))
