"""fersuite-export: ONNX Runtime parity for every zoo architecture, fallback, failure, sidecar."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from fersuite.deploy.base import OUTPUT_NAMES
from fersuite.deploy.exporter import ExportSettings, export_checkpoint
from fersuite.deploy.onnx import OnnxModel
from fersuite.deploy.verify import eval_face_batch
from fersuite.errors import ExportError
from fersuite.labels import CANONICAL_CLASSES
from tests._helpers.apps import run_app
from tests._helpers.export import FAST_ONNX, FAST_ONNX_OVERRIDES
from tests.conftest import run_env
from tests.export.helpers import TINY_CNN, ZOO, make_checkpoint

pytestmark = pytest.mark.long(1.4)

#: The default exporter (auto: dynamo): this file is where the dynamo path is the subject.
FAST = ExportSettings(latency_runs=2, latency_warmup=1, verify_faces=3, verify_batch=3)
#: The same for fersuite-export's argv (nothing else given: the app's defaults).
FAST_OVERRIDES = [
    "export.latency_runs=2",
    "export.latency_warmup=1",
    "export.verify_faces=3",
    "export.verify_batch=3",
]

#: The smallest configuration of every zoo architecture that its constructor allows (the
#: dynamo exporter's time grows with the graph's nodes): the smallest lightweight CNN (one
#: bottleneck, 32x32), timm's smallest EfficientNet/MobileNet-family test model, MiT-b0 (the
#: smallest variant) and EmoNet with one stack and one emotion block (64x64, its minimum).
SMALLEST: dict[str, dict[str, Any]] = {
    "lightweight_cnn": TINY_CNN,
    "timm": {"arch": "timm", "name": "test_efficientnet", "in_chans": 1, "input_size": 32},
    "mit_fer": ZOO["mit_fer"],
    "emonet": {**ZOO["emonet"], "num_emo_blocks": 1},
}
assert set(SMALLEST) == set(ZOO)  # every architecture of the zoo
TINY_SHAPE = (1, 32, 32)


def _assert_parity(net: torch.nn.Module, onnx_path: Path, x: torch.Tensor) -> None:
    """Independent check of the file in place: ORT vs eager on a batch size never seen."""
    ort = OnnxModel(onnx_path)
    with torch.no_grad():
        ref = net(x)
    got = ort(x)
    for name, r, g in zip(OUTPUT_NAMES, ref, got, strict=True):
        assert g.shape == r.shape, name
        assert float((r - g).abs().max()) <= 1e-4, name
    # the comparison is meaningful: outputs vary across inputs
    assert float(ref.expression.std(dim=0).max()) > 1e-3


@pytest.fixture(scope="module", params=sorted(SMALLEST))
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Each architecture exported once with the default exporter: (arch, net, info, folder)."""
    arch = request.param
    tmp = tmp_path_factory.mktemp(f"export_{arch}")
    ckpt, net = make_checkpoint(tmp / "m.ckpt", SMALLEST[arch])
    if arch != "lightweight_cnn":
        info = export_checkpoint(ckpt, FAST, tmp / "out")
        return arch, net, info, tmp / "out"
    # the smallest model through fersuite-export in-process (tests/_helpers/apps.py) with its
    # default settings but FAST's sizes: the app's default exporter is dynamo (the console
    # script below proves the entry point, with the fast exporter); the app returns no dict:
    # the sidecar holds the same export information
    res = run_app("fersuite-export", [f"ckpt_path={ckpt}", *FAST_OVERRIDES], tmp, run_env(tmp))
    assert res.returncode == 0, res.stderr[-3000:]
    (out,) = (tmp / "logs" / "export" / "runs").iterdir()
    assert "fersuite export" in res.stdout and "latency b1, ort" in res.stdout
    return arch, net, json.loads((out / "model.json").read_text()), out


def test_every_zoo_architecture_exports_to_onnx_with_parity(exported: Any) -> None:
    arch, net, info, out = exported
    assert info["exporter"] == "dynamo" and info["fallback_reason"] is None
    assert info["opset"] == 18
    ver = info["verification"]
    assert ver["performed"] and ver["backend"] == "onnxruntime"
    assert set(ver["cases"]) == {"random_b1", "random_b3", "faces_b3"}
    assert 0.0 <= ver["max_abs_diff"] <= 1e-4
    lat = info["latency_b1"]
    assert lat["ort_median_ms"] > 0 and lat["eager_median_ms"] > 0 and lat["threads"] == 1

    sidecar = json.loads((out / "model.json").read_text())
    assert sidecar["class_names"] == list(CANONICAL_CLASSES)
    assert sidecar["output_names"] == ["expression", "valence", "arousal"]
    assert sidecar["input"]["size"] == SMALLEST[arch]["input_size"]
    assert sidecar["input"]["channels"] == SMALLEST[arch]["in_chans"]
    assert sidecar["input"]["mean"] == [0.5] and sidecar["input"]["std"] == [0.5]
    assert sidecar["opset"] == 18 and sidecar["exporter"] == "dynamo"
    assert len(sidecar["checkpoint_sha256"]) == 64

    c, s = SMALLEST[arch]["in_chans"], SMALLEST[arch]["input_size"]
    _assert_parity(net, out / "model.onnx", torch.randn(5, c, s, s))


def test_dynamic_batch_axis_is_declared(exported: Any) -> None:
    import onnx

    arch, _, _, out = exported
    model = onnx.load(str(out / "model.onnx"))
    (inp,) = model.graph.input
    assert inp.name == "image"
    dims = inp.type.tensor_type.shape.dim
    c, s = SMALLEST[arch]["in_chans"], SMALLEST[arch]["input_size"]
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [c, s, s]
    assert [o.name for o in model.graph.output] == list(OUTPUT_NAMES)


def test_legacy_exporter_and_automatic_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt, net = make_checkpoint(tmp_path / "m.ckpt", TINY_CNN)
    legacy = export_checkpoint(
        ckpt, ExportSettings(exporter="legacy", latency_runs=0, verify_faces=2), tmp_path / "a"
    )
    assert legacy["exporter"] == "legacy" and legacy["fallback_reason"] is None
    assert legacy["verification"]["max_abs_diff"] <= 1e-4

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("unsupported operator aten::frobnicate\nmore detail")

    monkeypatch.setattr("fersuite.deploy.onnx._export_dynamo", broken)
    auto = export_checkpoint(ckpt, ExportSettings(latency_runs=0, verify_faces=2), tmp_path / "b")
    assert auto["exporter"] == "legacy"
    assert auto["fallback_reason"] == "RuntimeError: unsupported operator aten::frobnicate"
    assert json.loads((tmp_path / "b" / "model.json").read_text())["exporter"] == "legacy"
    _assert_parity(net, tmp_path / "b" / "model.onnx", torch.randn(2, *TINY_SHAPE))

    with pytest.raises(ExportError, match="dynamo ONNX exporter failed"):
        export_checkpoint(ckpt, ExportSettings(exporter="dynamo"), tmp_path / "c")


def test_a_mismatch_fails_loudly_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt, _ = make_checkpoint(tmp_path / "m.ckpt", TINY_CNN)
    real_call = OnnxModel.__call__

    def off_by_a_bit(self: OnnxModel, x: torch.Tensor):  # type: ignore[no-untyped-def]
        e, v, a = real_call(self, x)
        return e + 2e-4, v, a

    monkeypatch.setattr(OnnxModel, "__call__", off_by_a_bit)
    out = tmp_path / "out"
    # the verification is the subject, not the exporter: the fast one (tests/_helpers/export.py)
    settings = ExportSettings(
        latency_runs=2, latency_warmup=1, verify_faces=3, verify_batch=3, **FAST_ONNX
    )
    with pytest.raises(
        ExportError, match=r"random_b1/expression: max abs diff 0\.0002\d* > 0\.0001"
    ):
        export_checkpoint(ckpt, settings, out)
    assert not (out / "model.onnx").exists() and not (out / "model.json").exists()
    assert not list(out.glob(".*.tmp"))


def test_torchscript_format(tmp_path: Path) -> None:
    ckpt, net = make_checkpoint(tmp_path / "m.ckpt", ZOO["mit_fer"])
    info = export_checkpoint(ckpt, ExportSettings(format="torchscript", **_fast()), tmp_path)
    assert info["file"] == "model.pt" and info["exporter"] == "torchscript-trace"
    assert info["verification"]["backend"] == "torch.jit"
    assert info["verification"]["max_abs_diff"] <= 1e-4
    assert info["latency_b1"]["torchscript_median_ms"] > 0
    module = torch.jit.load(str(tmp_path / "model.pt"))
    x = torch.randn(6, 1, 48, 48)
    with torch.no_grad():
        outs = module(x)
        ref = net(x)
    for got, want in zip(outs, ref, strict=True):
        assert float((got - want).abs().max()) <= 1e-4


def _fast() -> dict[str, int]:
    return {"latency_runs": 2, "latency_warmup": 1, "verify_faces": 2, "verify_batch": 3}


def test_face_batch_uses_the_checkpoint_transform(tmp_path: Path) -> None:
    from fersuite.checkpoint import load_model_from_checkpoint

    cfg = dict(ZOO["emonet"])
    ckpt, _ = make_checkpoint(tmp_path / "m.ckpt", cfg, mean=(0.0,), std=(1.0,))
    _, meta = load_model_from_checkpoint(ckpt)
    x = eval_face_batch(meta, 4)
    assert x.shape == (4, 3, 64, 64) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0  # [0, 1] with mean 0 / std 1
    assert torch.equal(x[:, 0], x[:, 1])  # gray faces expanded to RGB


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"format": "tflite"}, "export.format='tflite'"),
        ({"exporter": "magic"}, "export.exporter='magic'"),
        ({"verify_batch": 100}, "exceeds export.max_batch=64"),
        ({"atol": 0.0}, "export.atol=0.0"),
    ],
)
def test_bad_settings(kwargs: dict[str, object], match: str) -> None:
    from fersuite.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        ExportSettings(**kwargs)  # type: ignore[arg-type]


@pytest.mark.smoke
@pytest.mark.subprocess
def test_console_script(tmp_path: Path) -> None:
    # the entry point is the subject: the smallest model and the fast exporter (the app with
    # its default exporter, dynamo, runs in-process above: the lightweight_cnn parity case)
    ckpt, _ = make_checkpoint(tmp_path / "m.ckpt", TINY_CNN)
    exe = str(Path(sys.executable).parent / "fersuite-export")
    args = [
        "export.latency_runs=2",
        "export.latency_warmup=1",
        "export.verify_faces=2",
        *FAST_ONNX_OVERRIDES,
    ]
    res = subprocess.run(
        [exe, f"ckpt_path={ckpt}", *args],
        cwd=tmp_path,
        env=run_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    (run,) = (tmp_path / "logs" / "export" / "runs").iterdir()
    assert (run / "model.onnx").is_file() and (run / "model.json").is_file()
    assert json.loads((run / "model.json").read_text())["exporter"] == "legacy"
    assert "fersuite export" in res.stdout and "latency b1, ort" in res.stdout


def test_a_missing_checkpoint_is_one_line_exit_2(tmp_path: Path) -> None:
    # the app in-process (tests/_helpers/apps.py): the entry point is proven above
    bad = run_app(
        "fersuite-export",
        [f"ckpt_path={tmp_path / 'missing.ckpt'}"],
        cwd=tmp_path,
        env=run_env(tmp_path),
    )
    assert bad.returncode == 2  # bad input (fersuite.apps)
    assert (
        bad.stderr.strip()
        .splitlines()[-1]
        .startswith("fersuite-export: error: checkpoint not found")
    )
    assert "Traceback" not in bad.stderr
