"""``fersuite-eval ckpt_path=model.onnx``: an exported model tested through the same module and
metrics as its checkpoint (same ``test/*`` keys and values), its card read from the sidecar."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from fersuite.errors import ConfigError, UserError
from fersuite.evaluation import ExportedNet, evaluated_model
from fersuite.types import AffectOutput
from tests._helpers.export import FAST_ONNX
from tests.cli.test_eval import SMALL_SYNTHETIC, _app, _compose, _tests
from tests.data.fixtures import write_fer2013
from tests.export.helpers import ZOO


@pytest.fixture(scope="module")
def ckpt(fake_checkpoint) -> Path:  # type: ignore[no-untyped-def]
    """A checkpoint in fersuite-train's format whose outputs vary with the input. (One epoch of
    TINY training leaves every output constant to 1e-8, which makes the correlation metrics
    noise: PCC of a constant.)"""
    return fake_checkpoint(ZOO["lightweight_cnn"])  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def exported(ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkpoint exported to ONNX (fp32, verified against eager; the fast exporter)."""
    from fersuite.deploy.exporter import ExportSettings, export_checkpoint

    out = tmp_path_factory.mktemp("onnx")
    settings = ExportSettings(latency_runs=0, verify_faces=2, verify_batch=2, **FAST_ONNX)
    export_checkpoint(ckpt, settings, out)
    return out / "model.onnx"


def _evaluate(name: str, path: Path, data: list[str], out: Path, *extra: str) -> dict:
    from fersuite.evaluation import evaluate
    from fersuite.training.run import train

    overrides = [*data, f"ckpt_path={path}", "logger=none", *extra]
    run = evaluate if name == "eval" else train
    metrics = run(_compose(name, overrides, out))
    GlobalHydra.instance().clear()
    return metrics


@pytest.mark.smoke
def test_onnx_gives_the_checkpoints_metrics_with_the_same_keys(
    ckpt: Path, exported: Path, tmp_path: Path
) -> None:
    via_ckpt = _evaluate("eval", ckpt, SMALL_SYNTHETIC, tmp_path / "ckpt")
    via_onnx = _evaluate("eval", exported, SMALL_SYNTHETIC, tmp_path / "onnx")
    # the alias; the sidecar says what was trained (model= is refused)
    via_alias = _evaluate("train", exported, SMALL_SYNTHETIC, tmp_path / "alias", "train=false")
    assert set(_tests(via_onnx)) == set(_tests(via_ckpt))
    assert {"test/acc", "test/f1_macro", "test/valence_ccc"} <= set(via_onnx)
    assert _tests(via_onnx) == pytest.approx(_tests(via_ckpt), abs=1e-4)
    assert _tests(via_alias) == pytest.approx(_tests(via_onnx), abs=1e-6)

    written = json.loads((tmp_path / "onnx" / "metrics.json").read_text())
    assert set(_tests(written)) == set(_tests(via_ckpt))
    info = json.loads((tmp_path / "onnx" / "run_info.json").read_text())
    assert info["evaluated_model"] == {"file": str(exported), "format": "onnx", "quantize": None}
    assert info["config"]["trainer"]["accelerator"] == "cpu"  # exported models run on the CPU
    assert info["config"]["model"]["arch"] == "lightweight_cnn"
    ckpt_info = json.loads((tmp_path / "ckpt" / "run_info.json").read_text())
    assert ckpt_info["evaluated_model"]["format"] == "checkpoint"


def test_onnx_on_another_dataset_maps_classes_like_the_checkpoint(
    ckpt: Path, exported: Path, tmp_path: Path
) -> None:
    fer = write_fer2013(tmp_path / "fer", n_per_split=10)
    data = ["data=fer2013", f"data.root={fer.root}", "data.num_workers=0"]
    via_ckpt = _evaluate("eval", ckpt, data, tmp_path / "ckpt")
    via_onnx = _evaluate("eval", exported, data, tmp_path / "onnx")
    assert "test/acc" in via_onnx and "test/valence_ccc" not in via_onnx  # FER2013: no VA
    assert _tests(via_onnx) == pytest.approx(_tests(via_ckpt), abs=1e-4)


def test_exported_net_feeds_the_runner_at_most_max_batch_images() -> None:
    seen: list[int] = []

    def runner(x: torch.Tensor) -> AffectOutput:
        seen.append(x.shape[0])
        flat = x.flatten(1)
        return AffectOutput(flat[:, :3] * 2, flat[:, 0], flat[:, 1])

    net = ExportedNet(runner, num_classes=3, max_batch=4)
    assert not list(net.parameters())
    x = torch.randn(10, 1, 4, 4)
    out = net(x)
    assert seen == [4, 4, 2]
    flat = x.flatten(1)
    assert torch.equal(out.expression, flat[:, :3] * 2)
    assert torch.equal(out.valence, flat[:, 0]) and torch.equal(out.arousal, flat[:, 1])


def test_the_sidecar_gives_format_quantize_and_max_batch(exported: Path, tmp_path: Path) -> None:
    model = evaluated_model(exported)
    assert (model.format, model.quantize, model.max_batch) == ("onnx", None, 64)
    assert model.card.arch == "lightweight_cnn"

    copy = tmp_path / "model.onnx"
    shutil.copy(exported, copy)
    sidecar = json.loads(exported.with_suffix(".json").read_text())
    sidecar["quantize"] = "int8"
    del sidecar["input"]["batch"]  # no batch range: one image at a time
    copy.with_suffix(".json").write_text(json.dumps(sidecar))
    model = evaluated_model(copy)
    assert (model.quantize, model.max_batch) == ("int8", 1)

    sidecar["input"]["batch"] = [1, 0]
    copy.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(ConfigError, match=r"model\.json: input\.batch=\[1, 0\]"):
        evaluated_model(copy)
    copy.with_suffix(".json").write_text("{not json")
    with pytest.raises(UserError, match="not a JSON sidecar"):
        evaluated_model(copy)


@pytest.mark.smoke
def test_an_onnx_without_its_sidecar_is_one_line_and_exit_2(exported: Path, tmp_path: Path) -> None:
    lone = tmp_path / "lone" / "model.onnx"
    lone.parent.mkdir()
    shutil.copy(exported, lone)
    res = _app(f"ckpt_path={lone}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert res.returncode == 2, res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("fersuite-eval: error: no sidecar model.json beside ")
    assert str(lone) in last
