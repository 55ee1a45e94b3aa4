"""``fersuite-export export.quantize=…``: calibrated on training images, judged on held-out
ones, gated by agreement and accuracy; wrong combinations are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from fersuite.deploy.calibration import export_data_config
from fersuite.deploy.exporter import ExportSettings, export_checkpoint
from fersuite.errors import ConfigError, ExportError
from tests._helpers.apps import run_app
from tests._helpers.export import FAST_ONNX
from tests.cli.test_eval import _compose
from tests.conftest import TINY, run_env
from tests.export.helpers import ZOO, make_checkpoint

pytestmark = pytest.mark.long(0.3)

FAST: dict[str, Any] = {
    "latency_runs": 0,
    "verify_faces": 2,
    **FAST_ONNX,
    "calibration_samples": 32,
    "held_out_samples": 40,
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A briefly trained lightweight CNN whose checkpoint records its (synthetic) data."""
    from fersuite.training.run import train

    tmp = tmp_path_factory.mktemp("qtrain")
    # one step on 32 images (the calibration set), 40 validation images (the held-out set),
    # no callbacks but the checkpoints: the model's size, not its training, is what the
    # checks need (an int8 file under 0.4x the fp32 one), the agreement gate is tested below
    over = [
        *TINY,
        "logger=none",
        "model=lightweight_cnn",
        "data.train_size=32",
        "data.val_size=40",
        "data.test_size=8",
        "~callbacks.efficiency",
        "~callbacks.reports",
        "~callbacks.progress_bar",
    ]
    train(_compose("train", over, tmp / "run"))
    GlobalHydra.instance().clear()
    return sorted((tmp / "run" / "checkpoints").glob("best-*.ckpt"))[0]


@pytest.mark.parametrize(
    ("fmt", "quantize"), [("torchscript", "int8"), ("executorch", "fp16"), ("onnx", "int4")]
)
def test_unavailable_quantisation_is_a_one_line_config_error(fmt: str, quantize: str) -> None:
    with pytest.raises(ConfigError, match=rf"export.quantize={quantize}") as err:
        ExportSettings(format=fmt, quantize=quantize)
    assert "\n" not in str(err.value)


def test_quantised_export_without_known_dataset_writes_nothing(tmp_path: Path) -> None:
    ckpt, _ = make_checkpoint(tmp_path / "m.ckpt", ZOO["lightweight_cnn"])  # records no data
    GlobalHydra.instance().clear()
    cfg = OmegaConf.create({"data": None})
    with pytest.raises(ConfigError, match=r"data=fer2013"):
        export_data_config(cfg, str(ckpt), "export.quantize=int8")
    with pytest.raises(ConfigError, match="needs images"):
        export_checkpoint(ckpt, ExportSettings(quantize="int8", **FAST), tmp_path / "out")
    assert not (tmp_path / "out" / "model.onnx").exists()


def _data(ckpt: Path) -> Any:
    GlobalHydra.instance().clear()
    return export_data_config(OmegaConf.create({"data": None}), str(ckpt), "test")


@pytest.mark.parametrize(
    ("fmt", "file"),
    [
        ("onnx", "model.onnx"),
        # ~1-2 min of XNNPACK lowering; ExecuTorch int8 is also exercised by test_executorch.py
        pytest.param("executorch", "model.pte", marks=pytest.mark.slow),
    ],
)
def test_int8_export_is_calibrated_verified_by_agreement_and_smaller(
    trained: Path, tmp_path: Path, fmt: str, file: str
) -> None:
    loose = {**FAST, "min_agreement": 0.0, "max_accuracy_drop": 1.0}
    fp32 = export_checkpoint(trained, ExportSettings(format=fmt, **loose), tmp_path / "fp32")
    info = export_checkpoint(
        trained,
        ExportSettings(format=fmt, quantize="int8", **loose),
        tmp_path / "int8",
        data=_data(trained),
    )
    assert fp32["quantize"] is None and fp32["verification"]["kind"] == "equality"
    ver = info["verification"]
    assert info["quantize"] == "int8" and ver["kind"] == "agreement"
    assert ver["held_out_images"] == 40
    assert 0.0 <= ver["top1_agreement"] <= 1.0
    assert 0.0 <= ver["accuracy_quantized"] <= 1.0
    assert ver["max_valence_diff"] >= 0.0 and ver["max_arousal_diff"] >= 0.0
    assert info["quantization"]["calibration_images"] == 32
    sidecar = json.loads((tmp_path / "int8" / "model.json").read_text())
    assert sidecar["verification"] == json.loads(json.dumps(ver))
    small = (tmp_path / "int8" / file).stat().st_size
    big = (tmp_path / "fp32" / file).stat().st_size
    assert small < 0.4 * big, (small, big)


def test_export_fails_and_writes_nothing_below_the_agreement_gate(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fersuite.deploy.exporter as exporter

    def poor(reference: Any, quantized: Any, batches: Any) -> dict[str, Any]:
        n = sum(int(x.shape[0]) for x, _ in batches)
        return {
            "top1_agreement": 0.5,
            "accuracy_fp32": 0.6,
            "accuracy_quantized": 0.3,
            "max_valence_diff": 0.1,
            "max_arousal_diff": 0.1,
            "held_out_images": n,
        }

    monkeypatch.setattr(exporter, "compare_quantized", poor)
    settings = ExportSettings(quantize="dynamic", **FAST)
    with pytest.raises(ExportError, match=r"0\.500 < export\.min_agreement=0\.9") as err:
        export_checkpoint(trained, settings, tmp_path / "q", data=_data(trained))
    assert "max_accuracy_drop" in str(err.value)
    assert not (tmp_path / "q" / "model.onnx").exists()
    assert not (tmp_path / "q" / "model.json").exists()


def test_cli_int8_torchscript_is_one_line_exit_2(trained: Path, tmp_path: Path) -> None:
    res = run_app(
        "fersuite-export",
        [f"ckpt_path={trained}", "export.format=torchscript", "export.quantize=int8"],
        cwd=tmp_path,
        env=run_env(tmp_path),
        module_entry=True,
    )
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "export.quantize=int8" in lines[0], res.stderr
