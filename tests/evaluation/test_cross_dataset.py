"""The cross-dataset matrix of fersuite-eval: every checkpoint on every test set, each cell the
same figures as one fersuite-eval of that pair; a class the model never learnt refuses its cell
only; bad command lines are one line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from fersuite.cli.eval import main as eval_main
from fersuite.reporting.cross_dataset import COLUMNS, read_cross_csv
from fersuite.reporting.sweep import write_sweep_report
from tests._helpers.apps import call_app
from tests._helpers.eval_run import eval_run
from tests.export.helpers import TARGET, ZOO
from tests.reporting.helpers import assert_valid_png

#: Applied to every test set of the matrix (both synthetic configs have these keys).
TEST_DATA = ["data.test_size=40", "data.num_workers=0", "data.eval_batch_size=20"]
FAST = ["logger=none", "callbacks.progress_bar=null"]
#: For an evaluation whose reports (plots: most of its time) no test reads.
NO_REPORTS = ["~callbacks.reports"]


#: The classes of data=synthetic_b (conf/data/synthetic_b.yaml): no contempt, no disgust.
SIX = ["neutral", "happy", "sad", "surprise", "fear", "anger"]


def _six_class_checkpoint(path: Path) -> Path:
    """A checkpoint in fersuite-train's format of a model of the 6 classes of synthetic_b
    (untrained: what is tested is that the classes it never learnt refuse its cells)."""
    from fersuite.checkpoint import META_KEY, training_card
    from fersuite.models.registry import create_model

    model_cfg = ZOO["lightweight_cnn"]
    torch.manual_seed(0)
    net = create_model(num_classes=len(SIX), **model_cfg).eval()
    card = training_card(
        model_cfg={"_target_": TARGET, **model_cfg},
        class_names=SIX,
        has_va=False,
        input_size=int(model_cfg["input_size"]),
        in_chans=int(model_cfg["in_chans"]),
        mean=(0.5,),
        std=(0.5,),
    )
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, META_KEY: card}, path)
    return path


@pytest.fixture(scope="module")
def ckpts(
    trained_run, fake_checkpoint, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    """Two 8-class models: a trained one (the shared run of tests/_helpers/eval_run.py) and
    an untrained one of another architecture width (tests/export/helpers.make_checkpoint);
    and a 6-class one (the classes of synthetic_b)."""
    return {
        "a": eval_run(trained_run)[0],
        "b": fake_checkpoint(ZOO["lightweight_cnn"]),
        "six": _six_class_checkpoint(tmp_path_factory.mktemp("six") / "six.ckpt"),
    }


def _eval(args: list[str], tmp: Path, monkeypatch, capsys):  # type: ignore[no-untyped-def]
    return call_app(eval_main, "fersuite-eval", [*FAST, *args], tmp, monkeypatch, capsys)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_matrix_cells_equal_single_evaluations(ckpts, tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    a, b = ckpts["a"], ckpts["b"]
    out = tmp_path / "sweep" / "0"  # a job dir of a sweep, gathered at the end
    args = [f"ckpt_paths=[{a},{b}]", "datasets=[synthetic,synthetic_b]", *TEST_DATA]
    res = _eval([*args, f"hydra.run.dir={out}"], tmp_path, monkeypatch, capsys)
    assert res.status == 0, res.err[-3000:]
    rows = _rows(out / "cross_dataset.csv")
    assert list(rows[0]) == list(COLUMNS)
    pairs = [(r["checkpoint"], r["dataset"]) for r in rows]
    assert pairs == [(str(c), d) for c in (a, b) for d in ("synthetic", "synthetic_b")]
    assert_valid_png(out / "cross_dataset.png")
    accs = set()
    for i, row in enumerate(rows):
        assert row["note"] == ""
        ds = row["dataset"]
        per_class = _rows(out / "cells" / f"{i // 2}-{ds}" / "per_class_test.csv")
        assert int(row["n"]) == sum(int(r["support"]) for r in per_class) > 0
        single = tmp_path / f"single{i}"
        one = [f"ckpt_path={row['checkpoint']}", f"data={row['dataset']}", *TEST_DATA]
        one += NO_REPORTS  # only its metrics.json is compared
        res = _eval([*one, f"hydra.run.dir={single}"], tmp_path, monkeypatch, capsys)
        assert res.status == 0, res.err[-3000:]
        metrics = json.loads((single / "metrics.json").read_text())
        for key in ("acc", "balanced_acc", "f1_macro"):
            assert float(row[key]) == pytest.approx(metrics[f"test/{key}"], abs=1e-9), key
        if row["dataset"] == "synthetic":  # valence/arousal only where the test set has them
            assert float(row["valence_ccc"]) == pytest.approx(metrics["test/valence_ccc"])
        else:
            assert row["valence_ccc"] == row["arousal_ccc"] == ""
            assert "test/valence_ccc" not in metrics
        accs.add(float(row["acc"]))
    assert len(accs) > 1  # four cells, not one figure copied
    # Each cell is an evaluation run of its own, with its reports.
    assert (out / "cells" / "1-synthetic_b" / "metrics.json").is_file()
    assert len(read_cross_csv(out / "cross_dataset.csv")) == 4
    # The sweep report gathers the job's matrix, line for line.
    report = write_sweep_report(tmp_path / "sweep")
    assert report.cross_refused == []
    # the matrix run is a finished job (its metrics.json holds each cell's accuracy)
    assert [j.status for j in report.jobs] == ["ok"]
    summary = json.loads((out / "metrics.json").read_text())
    assert {k for k in summary if k.startswith("cross/")} == {
        f"cross/{r}/{d}/acc" for r in (0, 1) for d in ("synthetic", "synthetic_b")
    }
    gathered = _rows(tmp_path / "sweep" / "cross_dataset.csv")
    assert [{k: g[k] for k in COLUMNS} for g in gathered] == rows
    assert {g["job"] for g in gathered} == {"0"}
    assert_valid_png(tmp_path / "sweep" / "cross_dataset.png")


def test_a_class_never_learnt_refuses_its_cell_only(
    ckpts, tmp_path: Path, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "matrix"
    six, a = ckpts["six"], ckpts["a"]
    args = [f"ckpt_paths=[{six},{a}]", "datasets=[synthetic]", *TEST_DATA, *NO_REPORTS]
    args.append(f"hydra.run.dir={out}")
    res = _eval(args, tmp_path, monkeypatch, capsys)
    assert res.status == 0, res.err[-3000:]
    refused, tested = _rows(out / "cross_dataset.csv")
    assert refused["checkpoint"] == str(six)
    assert refused["note"].startswith("refused: ")
    assert "never learnt the dataset class(es)" in refused["note"]
    assert "contempt" in refused["note"] and "disgust" in refused["note"]
    assert refused["acc"] == refused["n"] == ""
    assert tested["note"] == "" and 0.0 <= float(tested["acc"]) <= 1.0
    assert_valid_png(out / "cross_dataset.png")


def test_a_matrix_of_refused_cells_only_is_refused(
    ckpts, tmp_path: Path, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    args = [f"ckpt_paths=[{ckpts['six']}]", "datasets=[synthetic]", *TEST_DATA]
    res = _eval([*args, f"hydra.run.dir={tmp_path / 'm'}"], tmp_path, monkeypatch, capsys)
    assert res.status == 2
    assert len(res.error_lines) == 1, res.err
    assert "no cell of the matrix could be tested" in res.error_lines[0]
    assert (tmp_path / "m" / "cross_dataset.csv").is_file()  # the reasons stay on record


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["datasets=[synthetic]"], "ckpt_paths is not set"),
        (["ckpt_paths=[X]"], "datasets is not set"),
        (["ckpt_paths=[X]", "ckpt_path=X", "datasets=[synthetic]"], "ckpt_path=X and ckpt_paths"),
        (["ckpt_paths=[X]", "datasets=[nope]"], "datasets: nope is not a data config"),
        (["ckpt_paths=[X]", "datasets=[synthetic,synthetic]"], "a name is given twice"),
        (["ckpt_paths=[X]", "datasets=[synthetic]", "data=fer2013"], "data=fer2013 given with"),
        (["ckpt_paths=[X]", "datasets=[synthetic]", "+model.width_mult=1"], "defines the model"),
        (["ckpt_paths=X", "datasets=[synthetic]"], "ckpt_paths=X; expected a list"),
    ],
)
def test_bad_matrix_command_lines_are_one_line(
    args: list[str], match: str, ckpts, tmp_path: Path, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    ckpt = str(ckpts["a"])
    args = [a.replace("X", ckpt) for a in args]
    res = _eval([*args, f"hydra.run.dir={tmp_path / 'm'}"], tmp_path, monkeypatch, capsys)
    assert res.status == 2, res.err[-3000:]
    assert len(res.error_lines) == 1, res.err
    assert match.replace("X", ckpt) in res.error_lines[0]
    assert not (tmp_path / "m" / "cross_dataset.csv").exists()
