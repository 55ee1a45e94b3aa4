"""ExecuTorch: the fp32 ``.pte`` matches eager at any batch size, the int8 one is small and runs,
``load_predictor`` runs a ``.pte`` with its sidecar, and bad files or models give one line.

An export costs ~10 s (fp32) to ~20 s (int8) of CPU here plus ~20 s once per process (imports,
the XNNPACK pattern graphs), growing with the graph's nodes, not its weights: the default tests
use one small lightweight CNN (one bottleneck, a wide expansion block so that weights dominate the
file), exported once per format for the whole module.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from fersuite.card import ModelCard
from fersuite.checkpoint import load_model_from_checkpoint
from fersuite.data.synthetic import render_faces
from fersuite.deploy.base import TupleOutput
from fersuite.deploy.executorch import ExecuTorchModel, export_executorch
from fersuite.errors import ExportError, PredictError, UntrustedFileError
from fersuite.inference import load_predictor, predict_files
from fersuite.types import AffectOutput
from tests.export.helpers import ZOO, make_checkpoint

pytestmark = pytest.mark.long(0.9)

#: lightweight_cnn with one bottleneck (expand, depthwise, project) and a 4096-wide expansion
#: block: the fewest nodes (the export's time) with the weights dominating the file.
SMALL_CNN = {
    "arch": "lightweight_cnn",
    "in_chans": 1,
    "input_size": 48,
    "bottlenecks": [[6, 16, 1, 2]],
    "expansion_channels": 4096,
}
SHAPE = (1, 48, 48)


def _write_sidecar(pte: Path, card: ModelCard) -> None:
    pte.with_suffix(".json").write_text(json.dumps({"format": "executorch", **card.to_dict()}))


def _calibration() -> Iterator[torch.Tensor]:
    """A one-pass generator of batches of different sizes (5 + 3 images)."""
    gen = torch.Generator().manual_seed(7)
    for n in (5, 3):
        yield torch.randn((n, *SHAPE), generator=gen)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("executorch")
    ckpt, _ = make_checkpoint(root / "m.ckpt", SMALL_CNN, seed=1)
    net, card = load_model_from_checkpoint(ckpt)
    wrapper = TupleOutput(net).eval()
    example = torch.randn((2, *SHAPE))  # batch 2 given: the program is exported at batch 1
    fp32, int8 = root / "fp32" / "model.pte", root / "int8" / "model.pte"
    fp32.parent.mkdir()
    int8.parent.mkdir()
    info32 = export_executorch(wrapper, example, fp32)
    info8 = export_executorch(wrapper, example, int8, calibration=_calibration())
    for path in (fp32, int8):
        _write_sidecar(path, card)
    return {"net": net, "card": card, "ckpt": ckpt, "fp32": fp32, "int8": int8,
            "info32": info32, "info8": info8, "root": root}  # fmt: skip


def _max_diff(a: AffectOutput, b: AffectOutput) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def _check_shapes(out: AffectOutput, n: int, k: int) -> None:
    assert isinstance(out, AffectOutput)
    assert out.expression.shape == (n, k)
    assert out.valence.shape == (n,) and out.arousal.shape == (n,)
    assert all(t.dtype == torch.float32 for t in out)


def test_runtime_info_lines_are_not_printed(
    exported: dict[str, object], capfd: pytest.CaptureFixture[str]
) -> None:
    # the first load in the process probes the CPU; a changed thread count resets the pool
    ExecuTorchModel(exported["fp32"], threads=2)  # type: ignore[arg-type]
    ExecuTorchModel(exported["fp32"], threads=1)  # type: ignore[arg-type]
    err = capfd.readouterr().err
    assert "cpuinfo_utils" not in err and "threadpool" not in err, err


def test_fp32_matches_eager_at_any_batch(exported: dict[str, object]) -> None:
    assert exported["info32"] == {
        "exporter": "executorch",
        "backend": "xnnpack",
        "opset": None,
        "fallback_reason": None,
        "quantize": None,
        "calibration_images": 0,
    }
    model = ExecuTorchModel(exported["fp32"], threads=1)  # type: ignore[arg-type]
    assert model.input_shape == (1, *SHAPE)
    net: nn.Module = exported["net"]  # type: ignore[assignment]
    x = torch.randn((3, *SHAPE), generator=torch.Generator().manual_seed(0))
    out = model(x)
    _check_shapes(out, 3, 8)
    with torch.no_grad():
        ref = net(x)
    assert _max_diff(out, ref) <= 1e-4
    # each image is its own: the rows are the batch-1 results
    assert _max_diff(model(x[1:2]), AffectOutput(*(t[1:2] for t in out))) == 0.0
    assert not torch.allclose(out.expression[0], out.expression[1])  # depends on the input


def test_int8_is_small_and_runs(exported: dict[str, object]) -> None:
    info = exported["info8"]
    assert info["quantize"] == "int8" and info["calibration_images"] == 8  # type: ignore[index]
    assert info["backend"] == "xnnpack"  # type: ignore[index]
    fp32, int8 = Path(exported["fp32"]), Path(exported["int8"])  # type: ignore[arg-type]
    assert int8.stat().st_size <= 0.4 * fp32.stat().st_size
    model = ExecuTorchModel(int8, threads=1)
    x = torch.randn((4, *SHAPE), generator=torch.Generator().manual_seed(1))
    out = model(x)
    _check_shapes(out, 4, 8)
    assert all(bool(torch.isfinite(t).all()) for t in out)
    assert bool((out.valence.abs() <= 1).all()) and bool((out.arousal.abs() <= 1).all())


def test_load_predictor_runs_a_pte_with_its_sidecar(
    exported: dict[str, object], tmp_path: Path
) -> None:
    pred = load_predictor(exported["fp32"], threads=1)  # type: ignore[arg-type]
    card: ModelCard = exported["card"]  # type: ignore[assignment]
    assert isinstance(pred.run, ExecuTorchModel)
    assert pred.class_names == card.class_names and pred.size == 48 and pred.channels == 1
    faces = render_faces(3, size=64, seed=2)
    files = []
    for i, img in enumerate(faces.images):
        files.append(tmp_path / f"f{i}.png")
        Image.fromarray(img).save(files[-1])
    rows = predict_files(pred, files, batch_size=2)  # batches of 2 and 1
    ref = predict_files(load_predictor(exported["ckpt"]), files, batch_size=3)  # type: ignore[arg-type]
    for row, want in zip(rows, ref, strict=True):
        assert row["expression"] == want["expression"]
        for key in ("confidence", "valence", "arousal"):
            assert row[key] == pytest.approx(want[key], abs=1e-4), key


def test_missing_sidecar_and_missing_file_are_named(
    exported: dict[str, object], tmp_path: Path
) -> None:
    lone = tmp_path / "lone.pte"
    lone.write_bytes(Path(exported["fp32"]).read_bytes())  # type: ignore[arg-type]
    with pytest.raises(PredictError, match=r"no sidecar lone\.json"):
        load_predictor(lone)
    with pytest.raises(PredictError, match=r"absent\.pte: file not found \(a .*\.pte\)"):
        load_predictor(tmp_path / "absent.pte")


@pytest.mark.parametrize("kind", ["garbage", "truncated", "onnx-renamed"])
def test_a_bad_pte_is_one_line_naming_the_file(
    exported: dict[str, object], tmp_path: Path, kind: str
) -> None:
    bad = tmp_path / "model.pte"
    good = Path(exported["fp32"]).read_bytes()  # type: ignore[arg-type]
    if kind == "garbage":
        bad.write_bytes(b"\x00not a program" * 50)
    elif kind == "truncated":
        bad.write_bytes(good[: len(good) // 2])
    else:
        bad.write_bytes(b"\x08\x07\x12\x07pytorch" + bytes(200))
    _write_sidecar(bad, exported["card"])  # type: ignore[arg-type]
    for load in (ExecuTorchModel, load_predictor):
        with pytest.raises(UntrustedFileError) as info:  # someone else's file: exit status 2
            load(bad)
        text = str(info.value)
        assert text.startswith(f"ExecuTorch cannot load {bad}: ") and "\n" not in text, text


def test_wrong_input_shape_is_named(exported: dict[str, object]) -> None:
    model = ExecuTorchModel(exported["fp32"])  # type: ignore[arg-type]
    with pytest.raises(ExportError, match=r"expects input \(N, 1, 48, 48\); got \(2, 3, 48, 48\)"):
        model(torch.zeros((2, 3, 48, 48)))


class _DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if float(x.sum()) > 0:  # a Python branch on a value: torch.export cannot trace it
            x = -x
        return x.flatten(1), x.mean((1, 2, 3)), x.amax((1, 2, 3))


def test_export_failures_are_one_line(tmp_path: Path) -> None:
    target = tmp_path / "model.pte"
    with pytest.raises(ExportError) as info:
        export_executorch(_DataDependent(), torch.ones((1, *SHAPE)), target)
    assert str(info.value).startswith("the ExecuTorch export failed: ")
    assert "\n" not in str(info.value) and not target.exists()
    with pytest.raises(ExportError, match="calibration data holds no image"):
        export_executorch(_Tiny(), torch.ones((1, *SHAPE)), target, calibration=[])
    with pytest.raises(ExportError, match=r"calibration batch of shape \(2, 3, 48, 48\)"):
        export_executorch(_Tiny(), torch.ones((1, *SHAPE)), target, [torch.ones((2, 3, 48, 48))])
    assert not target.exists()


class _Tiny(nn.Module):
    """A one-convolution model with the exported signature (fast to export)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.fc(self.conv(x).mean((2, 3)))
        return out[:, :8], torch.tanh(out[:, 8]), torch.tanh(out[:, 9])


@pytest.mark.slow
def test_mit_fer_fp32_matches_eager(tmp_path: Path) -> None:
    ckpt, _ = make_checkpoint(tmp_path / "mit.ckpt", ZOO["mit_fer"], seed=2)
    net, _card = load_model_from_checkpoint(ckpt)
    target = tmp_path / "model.pte"
    info = export_executorch(TupleOutput(net).eval(), torch.randn((1, *SHAPE)), target)
    assert info["quantize"] is None
    x = torch.randn((2, *SHAPE), generator=torch.Generator().manual_seed(3))
    out = ExecuTorchModel(target, threads=1)(x)
    _check_shapes(out, 2, 8)
    with torch.no_grad():
        assert _max_diff(out, net(x)) <= 1e-4
