"""On fixture datasets: the fersuite-data console entry point, and a smoke training run of
each format (``fersuite.training.train``, which fersuite-train runs; the entry point itself is
tests/cli/test_train_smoke.py's)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests._helpers.apps import run_app
from tests._helpers.artifacts import train_run
from tests.conftest import TINY, run_env
from tests.data.fixtures import (
    Written,
    write_affectnet,
    write_fer2013,
    write_ferplus,
    write_folder,
    write_rafdb,
)

pytestmark = pytest.mark.long(0.6)

#: TINY without the synthetic-only keys.
TINY_REAL = [
    o for o in TINY if not o.startswith(("data.train_size", "data.val_size", "data.test_size"))
]


#: The smallest model and no profiling/reports: what is tested is that each format loads and
#: trains (the default callbacks are tested in tests/cli/test_train_smoke.py).
SMALLEST = [
    "model=lightweight_cnn",
    "model.width_mult=0.25",
    "model.expansion_channels=32",
    "~callbacks.efficiency",
    "~callbacks.reports",
]


def _script(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _run(
    tmp_path: Path, exe: str, *overrides: str, subprocess_: bool = False
) -> subprocess.CompletedProcess[str]:
    """``exe overrides...`` in-process, or as the console script (``subprocess_``)."""
    if not subprocess_:
        return run_app(exe, list(overrides), cwd=tmp_path, env=run_env(tmp_path))
    return subprocess.run(
        [_script(exe), *overrides],
        cwd=tmp_path,
        env=run_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _run_dir(tmp_path: Path, task: str) -> Path:
    (run,) = sorted((tmp_path / "logs" / task / "runs").glob("*"))
    return run


@pytest.mark.subprocess
def test_fersuite_data_writes_stats_and_samples(tmp_path: Path) -> None:
    w = write_fer2013(tmp_path / "fer", n_per_split={"train": 15, "val": 8, "test": 9})
    lines = (w.files[0]).read_text().splitlines()
    lines[4] = lines[4].replace(",", ",1 ", 1)  # line 5: 2305 pixels
    w.files[0].write_text("\n".join(lines) + "\n")
    res = _run(
        tmp_path,
        "fersuite-data",
        "data=fer2013",
        f"data.root={w.root}",
        "data.on_bad_sample=skip",
        subprocess_=True,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    run = _run_dir(tmp_path, "data")
    stats = json.loads((run / "data_stats.json").read_text())
    assert set(stats) == {"num_classes", "class_names", "image_shape", "splits", "skipped"}
    assert stats["num_classes"] == 7 and stats["image_shape"] == [48, 48]
    assert stats["class_names"] == [
        "anger",
        "disgust",
        "fear",
        "happy",
        "sad",
        "surprise",
        "neutral",
    ]
    assert stats["skipped"] == 1
    bad = next(s for s in w.samples if s.line == 5)
    for split in ("train", "val", "test"):
        kept = [s for s in w.split(split) if s is not bad]
        assert set(stats["splits"][split]) == {"size", "class_counts"}
        assert stats["splits"][split]["size"] == len(kept)
        for name in stats["class_names"]:
            assert stats["splits"][split]["class_counts"][name] == sum(s.name == name for s in kept)
    with Image.open(run / "samples.png") as grid:
        assert grid.format == "PNG" and grid.height >= 7 * 64
    assert "samples per class and split" in res.stdout and "skipped bad samples: 1" in res.stdout


def test_fersuite_data_bad_input_is_one_line(tmp_path: Path) -> None:
    w = write_affectnet(tmp_path / "an", n=16, n_test=8)
    s = w.split("test")[1]
    assert s.path is not None
    (w.root / "Manually_Annotated_Images" / s.path).write_bytes(b"broken")
    res = _run(tmp_path, "fersuite-data", "data=affectnet", f"data.root={w.root}")
    assert res.returncode == 2
    err = res.stderr.strip().splitlines()
    assert len([e for e in err if "Traceback" in e]) == 0
    assert err[-1].startswith("fersuite-data: error: ") and s.path in err[-1]
    assert "validation.csv:" in err[-1]
    res = _run(tmp_path, "fersuite-data", "data=fer2013", f"data.root={tmp_path / 'nope'}")
    assert res.returncode == 2
    last = res.stderr.strip().splitlines()[-1]
    expected = f"fersuite-data: error: {tmp_path / 'nope'} does not exist; expected a directory"
    assert last.startswith(expected), last


def _fixture(kind: str, root: Path) -> tuple[Written, list[str]]:
    if kind == "fer2013":
        return write_fer2013(root, n_per_split=8), ["data=fer2013"]
    if kind == "ferplus_soft":
        fer = write_fer2013(root, n_per_split=8)
        plus = write_ferplus(root, fer)
        return plus, [
            "data=fer2013",
            f"data.ferplus_labels={plus.files[0]}",
            "data.ferplus_mode=soft",
        ]
    if kind == "affectnet":
        return write_affectnet(root, n=16, n_test=8), ["data=affectnet"]
    if kind == "rafdb":
        return write_rafdb(root, n_train=14, n_test=7), ["data=rafdb"]
    return write_folder(root, counts={"train": 12, "test": 6}), [
        "data=folder",
        "data.va_csv=va.csv",
    ]


@pytest.mark.parametrize("kind", ["fer2013", "ferplus_soft", "affectnet", "rafdb", "folder"])
def test_train_smoke_on_each_format(tmp_path: Path, kind: str) -> None:
    w, overrides = _fixture(kind, tmp_path / "data")
    # the composed train config run in-process, without Hydra's app machinery (seconds a run)
    run = train_run(
        [
            *TINY_REAL,
            *SMALLEST,
            *overrides,
            f"data.root={w.root}",
            "data.batch_size=8",
            "logger=none",
        ],
        tmp_path,
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["test/acc"] <= 1.0
    if kind in ("affectnet", "folder"):
        assert "test/valence_ccc" in metrics
    else:
        assert "test/valence_ccc" not in metrics
    assert list((tmp_path / "cache").glob("*/*/manifest.json"))
