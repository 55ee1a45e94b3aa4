"""predictions_test.csv of a real (tiny) training run and of fersuite-eval on its checkpoint:
the figures recomputed from the file are metrics.json's, rows are the test samples by index,
and the probabilities are what was scored (with test-time augmentation when asked)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from fersuite.config import CONFIG_DIR
from fersuite.reporting.run_report import PREDICTIONS_FILE, Predictions, read_predictions
from tests.conftest import TINY, compose_train

TEST_SIZE = 48  # TINY's data.test_size


def _job(cfg: DictConfig) -> DictConfig:
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DictConfig]:
    """One tiny training run (fit + test): its run dir and config."""
    from fersuite.training.run import train

    tmp = tmp_path_factory.mktemp("predictions")
    fast = [
        "logger=none",
        "data.train_size=32",  # the test split (TEST_SIZE) is what is checked
        "data.val_size=16",
        "model=lightweight_cnn",
        "model.width_mult=0.25",
        "model.expansion_channels=32",
        "~callbacks.efficiency",
    ]
    cfg = _job(compose_train([*TINY, *fast], tmp))
    train(cfg)
    GlobalHydra.instance().clear()
    return tmp / "run", cfg


def _balanced(p: Predictions) -> tuple[float, dict[str, float]]:
    recalls = {}
    for k, name in enumerate(p.class_names):
        mine = p.target == k
        if mine.any():
            recalls[name] = float((p.pred[mine] == k).mean())
    return float(np.mean(list(recalls.values()))), recalls


def _reference_logits(ckpt: Path, images: torch.Tensor, flip: bool) -> np.ndarray:
    from fersuite.checkpoint import load_model_from_checkpoint

    net, _ = load_model_from_checkpoint(ckpt)
    net.eval()
    with torch.no_grad():
        logits = net(images).expression
        if flip:
            logits = (logits + net(torch.flip(images, dims=(-1,))).expression) / 2
    return logits.numpy()


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_the_training_run_writes_the_test_predictions(trained) -> None:  # type: ignore[no-untyped-def]
    run, cfg = trained
    metrics = json.loads((run / "metrics.json").read_text())
    p = read_predictions(run / PREDICTIONS_FILE)

    dm = instantiate(cfg.data)
    dm.setup("test")
    assert p.class_names == tuple(dm.class_names)
    assert sorted(p.index.tolist()) == list(range(TEST_SIZE))  # a permutation of 0..N-1
    # index is the sample's position in the test split: its labels are the split's labels
    split = dm.splits["test"]
    np.testing.assert_array_equal(p.target, split.hard_labels[p.index])
    assert p.valence_target is not None and split.valence is not None
    np.testing.assert_allclose(p.valence_target, split.valence[p.index], rtol=1e-6, atol=1e-7)
    assert p.valence is not None and np.all(np.abs(p.valence) <= 1)

    # the metrics, recomputed from the file
    assert float((p.pred == p.target).mean()) == pytest.approx(metrics["test/acc"], abs=1e-6)
    balanced, recalls = _balanced(p)
    assert balanced == pytest.approx(metrics["test/balanced_acc"], abs=1e-6)
    assert {k for k in metrics if k.startswith("test/recall_")} == {
        f"test/recall_{name}" for name in recalls
    }
    for name, recall in recalls.items():
        assert metrics[f"test/recall_{name}"] == pytest.approx(recall, abs=1e-6)
    assert "val/balanced_acc" in metrics

    # the probabilities are the tested checkpoint's softmax, sample by sample
    (ckpt,) = sorted((run / "checkpoints").glob("best-*.ckpt"))
    ds = dm.dataset("test")
    images = torch.stack([ds[int(i)]["image"] for i in p.index])
    probs = _softmax(_reference_logits(ckpt, images, flip=False))
    np.testing.assert_allclose(p.probs, probs, atol=1e-6)
    np.testing.assert_array_equal(p.pred, probs.argmax(1))


def test_eval_on_the_checkpoint_writes_them_with_tta(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from fersuite.evaluation import evaluate

    run, train_cfg = trained
    (ckpt,) = sorted((run / "checkpoints").glob("best-*.ckpt"))
    data = [o for o in TINY if o.startswith("data.")]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        overrides = [*data, f"ckpt_path={ckpt}", "logger=none", "tta=hflip"]
        cfg = compose(config_name="eval", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "eval")
        cfg.paths.cache_dir = str(tmp_path / "cache")
        cfg.hydra.runtime.output_dir = str(tmp_path / "eval")
    HydraConfig.instance().set_config(cfg)
    try:
        metrics = evaluate(_job(cfg))
    finally:
        GlobalHydra.instance().clear()

    p = read_predictions(tmp_path / "eval" / PREDICTIONS_FILE)
    assert sorted(p.index.tolist()) == list(range(TEST_SIZE))
    assert float((p.pred == p.target).mean()) == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert _balanced(p)[0] == pytest.approx(metrics["test/balanced_acc"], abs=1e-6)
    # tta=hflip: the probabilities are those of the logits averaged with the mirror image's
    dm = instantiate(train_cfg.data)
    dm.setup("test")
    ds = dm.dataset("test")
    images = torch.stack([ds[int(i)]["image"] for i in p.index])
    flipped = _softmax(_reference_logits(ckpt, images, flip=True))
    plain = _softmax(_reference_logits(ckpt, images, flip=False))
    np.testing.assert_allclose(p.probs, flipped, atol=1e-6)
    assert np.abs(p.probs - plain).max() > 1e-4  # TTA changed them
