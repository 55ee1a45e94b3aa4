"""ReportCallback inside a real (tiny) Lightning test run: files, figures, W&B media."""

from __future__ import annotations

import csv
from functools import partial
from pathlib import Path

import lightning.pytorch as L
import numpy as np
import pytest
import torch

from fersuite.callbacks.reports import ReportCallback
from fersuite.data.synthetic_datamodule import SyntheticDataModule
from fersuite.losses import AffectLoss
from fersuite.models.registry import create_model
from fersuite.modules.affect_module import AffectModule
from fersuite.reporting import update_wandb_summary
from tests.reporting.helpers import assert_valid_png

TEST_SIZE = 40


def _setup(tmp_path: Path) -> tuple[AffectModule, SyntheticDataModule]:
    torch.manual_seed(0)
    dm = SyntheticDataModule(
        train_size=16,
        val_size=16,
        test_size=TEST_SIZE,
        batch_size=16,
        num_workers=0,
        image_size=48,
        in_chans=1,
        cache_dir=None,
    )
    net = create_model("lightweight_cnn", num_classes=8, in_chans=1, input_size=48, width_mult=0.5)
    module = AffectModule(
        net=net,
        loss=AffectLoss(),
        optimizer=partial(torch.optim.SGD, lr=0.01),
        class_names=dm.class_names,
        has_va=True,
    )
    return module, dm


def _trainer(tmp_path: Path, cb: ReportCallback, logger: object = False) -> L.Trainer:
    return L.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        callbacks=[cb],
        logger=logger,  # type: ignore[arg-type]
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        max_epochs=1,
        limit_train_batches=1,
        num_sanity_val_steps=0,
    )


def test_test_report_matches_the_module_confusion_and_predictions(tmp_path: Path) -> None:
    module, dm = _setup(tmp_path)
    cb = ReportCallback(output_dir=str(tmp_path / "run"), stages=("val", "test"))
    trainer = _trainer(tmp_path, cb)
    trainer.fit(module, datamodule=dm)
    trainer.test(module, datamodule=dm)

    run = tmp_path / "run"
    for name in (
        "confusion_test.png",
        "va_test.png",
        "confusion_val.png",
        "va_val.png",
        "reliability_test.png",
        "reliability_val.png",
    ):
        assert_valid_png(run / name)
    with open(run / "per_class_test.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["class"] for r in rows] == list(dm.class_names)
    cm = module.confusion["test"]
    assert [int(r["support"]) for r in rows] == cm.sum(1).tolist()
    assert [int(r["correct"]) for r in rows] == torch.diag(cm).tolist()
    assert sum(int(r["support"]) for r in rows) == TEST_SIZE

    # The VA pairs are the network's own eval predictions for the whole test set, in order.
    va = cb.buffers["test"].va()
    assert va is not None and len(va) == TEST_SIZE
    module.eval()
    with torch.no_grad():
        x = torch.stack([dm.dataset("test")[i]["image"] for i in range(TEST_SIZE)])
        out = module.net(x)
    np.testing.assert_allclose(va.pred_valence, out.valence.clamp(-1, 1).numpy(), atol=1e-5)
    np.testing.assert_allclose(va.true_arousal, dm.splits["test"].arousal, atol=1e-6)
    # The hook is gone after the stage: later forwards are not captured.
    assert not module.net._forward_hooks

    # Per-class accuracies end up in the results fersuite-train merges into metrics.json.
    expected = {f"test/acc_{r['class']}": float(r["accuracy"]) for r in rows}
    assert cb.results.keys() >= expected.keys()
    assert cb.results["test/acc_neutral"] == pytest.approx(expected["test/acc_neutral"])


def test_wandb_logger_receives_images_and_table(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import WandbLogger

    module, dm = _setup(tmp_path)
    logger = WandbLogger(project="fersuite-test", save_dir=str(tmp_path), offline=True)
    cb = ReportCallback(output_dir=str(tmp_path / "run"))
    trainer = _trainer(tmp_path, cb, logger)
    try:
        trainer.test(module, datamodule=dm)
        run_dir = Path(logger.experiment.dir)
        assert update_wandb_summary({"test/acc": 0.5, "efficiency/macs": 1e6, "skip": "x"})
        assert logger.experiment.summary["test/acc"] == 0.5
        assert "skip" not in dict(logger.experiment.summary)
    finally:
        import wandb

        wandb.finish()
    images = list((run_dir / "media" / "images" / "reports").glob("*.png"))
    assert {p.name.split("_test")[0] for p in images} == {"confusion", "va_scatter", "reliability"}
    assert list((run_dir / "media" / "table" / "reports").glob("per_class_test*.json"))


def test_summary_update_without_a_run_is_a_no_op() -> None:
    import wandb

    assert wandb.run is None
    assert update_wandb_summary({"test/acc": 0.5}) is False


def test_bad_stage_name_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"callbacks\.reports\.stages"):
        ReportCallback(stages=("train",))
    with pytest.raises(ValueError, match=r"callbacks\.reports\.plots='no'; expected true or false"):
        ReportCallback(plots="no")  # type: ignore[arg-type]


def test_without_plots_the_report_is_the_same_but_draws_no_figure(tmp_path: Path) -> None:
    module, dm = _setup(tmp_path)
    cb = ReportCallback(output_dir=str(tmp_path / "run"), stages=("val", "test"), plots=False)
    trainer = _trainer(tmp_path, cb)
    trainer.fit(module, datamodule=dm)
    trainer.test(module, datamodule=dm)

    run = tmp_path / "run"
    assert not list(run.glob("*.png"))
    assert sorted(p.name for p in run.glob("*.csv")) == [
        "per_class_test.csv",
        "per_class_val.csv",
        "predictions_test.csv",
    ]
    with open(run / "per_class_test.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["correct"]) for r in rows] == torch.diag(module.confusion["test"]).tolist()
    assert cb.results["test/acc_neutral"] == pytest.approx(float(rows[0]["accuracy"]))
    report = cb.reports["test"]
    assert report.confusion_png is report.va_png is report.reliability_png is None
    assert set(report.paths()) == {"per_class", "predictions"}


def test_wandb_gets_charts_at_every_validation_and_at_test(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import WandbLogger

    module, dm = _setup(tmp_path)
    logger = WandbLogger(project="fersuite-test", save_dir=str(tmp_path), offline=True)
    cb = ReportCallback(output_dir=str(tmp_path / "run"))  # stages: test only (files)
    trainer = _trainer(tmp_path, cb, logger)
    trainer.fit_loop.max_epochs = 2
    charts: list[str] = []
    log_metrics = logger.log_metrics

    def spy(metrics: dict, step: int | None = None) -> None:  # type: ignore[type-arg]
        charts.extend(k for k, v in metrics.items() if type(v).__name__ == "CustomChart")
        log_metrics(metrics, step=step)

    logger.log_metrics = spy  # type: ignore[method-assign]
    try:
        trainer.fit(module, datamodule=dm)
        trainer.test(module, datamodule=dm)
        run_dir = Path(logger.experiment.dir)
    finally:
        import wandb

        wandb.finish()
    tables = run_dir / "media" / "table" / "reports"
    names = sorted(p.name for p in tables.glob("*.json"))
    for stage, epochs in (("val", 2), ("test", 1)):
        for key in ("confusion_matrix", "per_class", "va_points"):
            found = [n for n in names if n.startswith(f"{key}_{stage}_")]
            assert len(found) == epochs, (key, stage, "\n".join(names))
    # The interactive confusion matrix counts every validation image once.
    import json

    last = sorted(tables.glob("confusion_matrix_val_*.json"), key=lambda p: p.stat().st_mtime)[-1]
    data = json.loads(last.read_text())
    columns = data["columns"]
    total = sum(row[columns.index("nPredictions")] for row in data["data"])
    assert total == 16  # val_size
    assert not (tmp_path / "run" / "confusion_val.png").exists()  # no val files: not a stage
    # The interactive ones are W&B custom charts (Vega panels over those tables).
    for stage, epochs in (("val", 2), ("test", 1)):
        for key in ("confusion_matrix", "valence", "arousal"):
            assert charts.count(f"reports/{key}_{stage}") == epochs, charts
