"""A trained checkpoint -> ONNX (or TorchScript), verified, with its model card as sidecar.

The model is rebuilt safely with :func:`fersuite.checkpoint.load_model_from_checkpoint`
(``weights_only=True``, registry only) and exported with one input ``image`` (N, C, H, W;
float32, normalised as in training) whose batch axis is dynamic (1..``max_batch``), and three
outputs: ``expression`` (N, classes; logits), ``valence`` (N) and ``arousal`` (N).

Before the file is moved into place it is verified (:mod:`fersuite.deploy.verify`): every
output must match eager PyTorch within ``atol`` (1e-4), otherwise nothing is written.
``model.json`` (the sidecar) is the model card (:meth:`fersuite.card.ModelCard.to_dict`:
model config, class names, ``has_va``, input spec, face crop) plus the input's name/layout,
output names, opset, exporter, verification and latency.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from fersuite.card import ModelCard, parse_card_json
from fersuite.checkpoint import load_model_from_checkpoint, read_card
from fersuite.config import settings_keys
from fersuite.deploy.base import FILES, INPUT_NAME, OUTPUT_NAMES, TupleOutput
from fersuite.deploy.calibration import datamodule_for_card, image_batches
from fersuite.deploy.onnx import OnnxModel, export_onnx
from fersuite.deploy.onnx_quant import cpu_vnni, quantize_onnx
from fersuite.deploy.torchscript import TorchScriptModel, export_torchscript
from fersuite.deploy.verify import (
    compare_outputs,
    compare_quantized,
    latencies,
    verification_inputs,
)
from fersuite.errors import ConfigError, ExportError, UntrustedFileError
from fersuite.utils.io import atomic_path, atomic_write_json, json_default

__all__ = ["EXPORTERS", "ExportSettings", "export_checkpoint", "sidecar"]

EXPORTERS = ("auto", "dynamo", "legacy")
#: ``export.quantize`` values each format supports (None: fp32)
QUANTIZE = {
    "onnx": (None, "int8", "fp16", "dynamic"),
    "torchscript": (None,),
    "executorch": (None, "int8"),
}


@dataclass(frozen=True)
class ExportSettings:
    """The ``export.*`` keys, validated."""

    format: str = "onnx"
    out_dir: str | None = None
    exporter: str = "auto"
    opset: int = 18
    max_batch: int = 64
    verify: bool = True
    atol: float = 1e-4
    verify_batch: int = 4
    verify_faces: int = 8
    seed: int = 0
    latency_runs: int = 50
    latency_warmup: int = 10
    threads: int = 1
    quantize: str | None = None
    calibration_samples: int = 512
    held_out_samples: int = 256
    reduce_range: bool | None = None
    min_agreement: float = 0.9
    max_accuracy_drop: float = 0.02

    def __post_init__(self) -> None:
        if self.format not in FILES:
            raise ConfigError(f"export.format={self.format!r}; expected one of {tuple(FILES)}")
        if self.exporter not in EXPORTERS:
            raise ConfigError(f"export.exporter={self.exporter!r}; expected one of {EXPORTERS}")
        if self.quantize not in QUANTIZE[self.format]:
            allowed = ", ".join("null" if q is None else q for q in QUANTIZE[self.format])
            raise ConfigError(
                f"export.quantize={self.quantize} is not available for "
                f"export.format={self.format}; expected one of: {allowed}"
            )
        for key, lo in (
            ("opset", 7),
            ("max_batch", 2),
            ("verify_batch", 1),
            ("verify_faces", 0),
            ("seed", 0),
            ("latency_runs", 0),
            ("latency_warmup", 0),
            ("threads", 1),
            ("calibration_samples", 1),
            ("held_out_samples", 1),
        ):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise ConfigError(f"export.{key}={value!r}; expected an integer >= {lo}")
        if self.verify_batch > self.max_batch:
            raise ConfigError(
                f"export.verify_batch={self.verify_batch} exceeds export.max_batch={self.max_batch}"
            )
        if not self.atol > 0:
            raise ConfigError(f"export.atol={self.atol}; expected a tolerance > 0")
        if self.reduce_range is not None and not isinstance(self.reduce_range, bool):
            raise ConfigError(
                f"export.reduce_range={self.reduce_range!r}; expected true, false or null (auto)"
            )
        for key in ("min_agreement", "max_accuracy_drop"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"export.{key}={value!r}; expected a number in 0..1")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise ConfigError(f"export.min_agreement={self.min_agreement}; expected 0..1")
        if not 0.0 <= self.max_accuracy_drop <= 1.0:
            raise ConfigError(f"export.max_accuracy_drop={self.max_accuracy_drop}; expected 0..1")

    @classmethod
    def from_config(cls, cfg: DictConfig | dict[str, Any] | None) -> ExportSettings:
        raw = settings_keys(cfg, cls.__dataclass_fields__, "export")
        for key in ("atol", "min_agreement", "max_accuracy_drop"):
            if key in raw and isinstance(raw[key], int | float) and not isinstance(raw[key], bool):
                raw[key] = float(raw[key])
        return cls(**raw)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


_INFO_KEYS = ("exporter", "opset", "fallback_reason")
_VERSIONED = ("fersuite", "torch", "onnx", "onnxruntime", "executorch", "torchao")


def sidecar(card: ModelCard, s: ExportSettings, info: dict[str, Any], ckpt: Path) -> dict[str, Any]:
    """The ``model.json`` content: the model card plus the export's facts (verification and
    latency are added by the caller)."""
    n = len(card.class_names)
    exif = "applied" if card.face_crop.exif else "ignored"
    out = card.to_dict()
    out["input"].update(
        name=INPUT_NAME,
        layout="NCHW",
        dtype="float32",
        # the program's batch range (ExecuTorch: exported at batch 1; its runner loops)
        batch=[1, 1 if s.format == "executorch" else s.max_batch],
        preprocessing=f"image file -> EXIF orientation {exif} -> face crop "
        f"({card.face_crop.describe()}) resized to {card.crop_size}x{card.crop_size} -> "
        "gray/RGB to `channels` -> antialiased resize to size x size -> /255 -> "
        "(x - mean) / std (fersuite.card.load_input)",
    )
    return {
        "format": s.format,
        "file": FILES[s.format],
        "quantize": s.quantize,
        "quantization": {k: v for k, v in info.items() if k not in _INFO_KEYS} or None,
        **out,
        "outputs": [
            {"name": "expression", "shape": ["N", n], "meaning": "logits over class_names"},
            {"name": "valence", "shape": ["N"], "meaning": "valence in [-1, 1]"},
            {"name": "arousal", "shape": ["N"], "meaning": "arousal in [-1, 1]"},
        ],
        "output_names": list(OUTPUT_NAMES),
        "opset": info.get("opset"),
        "exporter": info["exporter"],
        "fallback_reason": info.get("fallback_reason"),
        "source_checkpoint": str(ckpt),
        "checkpoint_sha256": _sha256(ckpt),
        "versions": {p: _version(p) for p in _VERSIONED},
    }


def _images(
    s: ExportSettings, card: ModelCard, data: DictConfig | None, source: str
) -> tuple[list[torch.Tensor] | None, list[tuple[torch.Tensor, torch.Tensor]] | None]:
    """Calibration batches (train split; int8 only) and held-out batches (val split; a
    verified quantised export) read through the model card's preprocessing."""
    need_calib = s.quantize == "int8"
    need_held = s.quantize is not None and s.verify
    if not (need_calib or need_held):
        return None, None
    if data is None:
        raise ConfigError(
            f"export.quantize={s.quantize} needs images (calibration and held-out) and no "
            f"dataset is known for {source}: name one, e.g. data=fer2013 data.root=<dir>"
        )
    dm = datamodule_for_card(data, card)
    calib = (
        [x for x, _ in image_batches(dm, "train", s.calibration_samples, card, seed=s.seed)]
        if need_calib
        else None
    )
    held = (
        list(image_batches(dm, "val", s.held_out_samples, card, seed=s.seed)) if need_held else None
    )
    return calib, held


def _export_file(
    s: ExportSettings,
    wrapper: torch.nn.Module,
    example: torch.Tensor,
    tmp: Path,
    calib: list[torch.Tensor] | None,
) -> tuple[dict[str, Any], Any, dict[str, Any] | None]:
    """Write the exported model to ``tmp``; return (info, its runner, the fp32 intermediate's
    verification for a quantised ONNX)."""
    fp32_check: dict[str, Any] | None = None
    if s.format == "onnx":
        if s.quantize is None:
            info = export_onnx(wrapper, example, tmp, s.exporter, s.opset, s.max_batch)
            return info, OnnxModel(tmp, threads=s.threads), None
        with tempfile.TemporaryDirectory(prefix="fersuite-export-") as work:
            fp32 = Path(work) / "fp32.onnx"
            info = export_onnx(wrapper, example, fp32, s.exporter, s.opset, s.max_batch)
            if s.verify:  # the fp32 graph must match PyTorch before it is quantised
                inputs = {"random": example}
                diffs = compare_outputs(wrapper_net(wrapper), OnnxModel(fp32), inputs, s.atol)
                fp32_check = {"atol": s.atol, "max_abs_diff": _worst(diffs)}
            info = {**info, **quantize_onnx(fp32, tmp, s.quantize, calib, _reduce_range(s))}
        return info, OnnxModel(tmp, threads=s.threads), fp32_check
    if s.format == "executorch":
        from fersuite.deploy.executorch import ExecuTorchModel, export_executorch

        info = export_executorch(wrapper, example, tmp, calibration=calib)
        return info, ExecuTorchModel(tmp, threads=s.threads), None
    info = export_torchscript(wrapper, example, tmp)
    # loaded as fersuite-predict will load it: the file must pass the same checks
    return info, TorchScriptModel(tmp), None


def _reduce_range(s: ExportSettings) -> bool:
    """``export.reduce_range``; null: on for x86 CPUs without VNNI, whose u8*s8 int8 kernels
    can saturate (ONNX Runtime's advice), off elsewhere."""
    if s.reduce_range is not None:
        return s.reduce_range
    cpu = cpu_vnni()
    x86 = str(cpu.get("machine", "")).lower() in ("x86_64", "amd64", "i686", "x86")
    return x86 and not cpu["vnni"]


def wrapper_net(wrapper: torch.nn.Module) -> torch.nn.Module:
    return wrapper.net if isinstance(wrapper, TupleOutput) else wrapper


def _worst(diffs: dict[str, dict[str, float]]) -> float:
    return max(d for case in diffs.values() for d in case.values())


def _check_agreement(s: ExportSettings, result: dict[str, Any]) -> None:
    problems = []
    agreement = float(result["top1_agreement"])
    if agreement < s.min_agreement:
        problems.append(
            f"top-1 agreement with fp32 {agreement:.3f} < export.min_agreement={s.min_agreement}"
        )
    drop = float(result["accuracy_fp32"]) - float(result["accuracy_quantized"])
    if drop > s.max_accuracy_drop:
        problems.append(
            f"accuracy {result['accuracy_quantized']:.3f} vs fp32 {result['accuracy_fp32']:.3f}: "
            f"drop {drop:.3f} > export.max_accuracy_drop={s.max_accuracy_drop}"
        )
    if problems:
        raise ExportError(
            f"{s.quantize} model rejected on {result['held_out_images']} held-out images: "
            + "; ".join(problems)
        )


BACKENDS = {"onnx": "onnxruntime", "torchscript": "torch.jit", "executorch": "executorch"}


def export_checkpoint(
    ckpt_path: str | os.PathLike[str],
    settings: ExportSettings,
    out_dir: str | os.PathLike[str],
    data: DictConfig | None = None,
) -> dict[str, Any]:
    """Export, verify and time one checkpoint; returns the sidecar written to ``model.json``.

    ``data``: the dataset config the calibration and held-out images of a quantised export
    come from (:mod:`fersuite.deploy.calibration`)."""
    s = settings
    ckpt = Path(ckpt_path)
    net, card = load_model_from_checkpoint(ckpt)
    net.eval()
    wrapper = TupleOutput(net).eval()
    calib, held = _images(s, card, data, str(ckpt))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / FILES[s.format]
    gen = torch.Generator().manual_seed(s.seed)
    # ONNX/TorchScript trace at batch 2, so that the batch axis is not specialised to 1;
    # ExecuTorch programs are exported at batch 1 (the runner feeds one image at a time).
    batch = 1 if s.format == "executorch" else 2
    example = torch.randn((batch, card.in_chans, card.input_size, card.input_size), generator=gen)

    verification: dict[str, Any] = {"performed": False}
    latency: dict[str, Any] = {}
    with atomic_path(target) as tmp:
        try:
            info, exported, fp32_check = _export_file(s, wrapper, example, tmp, calib)
        except UntrustedFileError as exc:  # a file fersuite just wrote: the export failed
            raise ExportError(f"the exported file fails fersuite's own reader: {exc}") from exc
        if s.verify and s.quantize is None:
            inputs = verification_inputs(card, s.verify_batch, s.verify_faces, s.seed)
            diffs = compare_outputs(net, exported, inputs, s.atol)
            verification = {
                "performed": True,
                "kind": "equality",
                "atol": s.atol,
                "max_abs_diff": _worst(diffs),
                "cases": diffs,
                "backend": BACKENDS[s.format],
            }
        elif s.verify:
            assert held is not None
            with torch.no_grad():
                result = compare_quantized(net, exported, held)
            verification = {
                "performed": True,
                "kind": "agreement",
                "reference": "eager fp32 (PyTorch)",
                "backend": BACKENDS[s.format],
                **result,
                "min_agreement": s.min_agreement,
                "max_accuracy_drop": s.max_accuracy_drop,
                "fp32_graph": fp32_check,
            }
            _check_agreement(s, result)
        if s.latency_runs > 0:
            latency = latencies(
                net,
                exported,
                card,
                s.latency_warmup,
                s.latency_runs,
                s.threads,
                s.seed,
                name={"onnx": "ort"}.get(s.format, s.format),
            )

    info_out = sidecar(card, s, info, ckpt)
    info_out["verification"] = verification
    info_out["latency_b1"] = latency
    # model.json is only ever a card that its readers accept (read_sidecar's bounds)
    text = json.dumps(info_out, sort_keys=True, allow_nan=False, default=json_default)
    written = str(out / "model.json")
    read_card(parse_card_json(text.encode(), written), written)
    atomic_write_json(out / "model.json", info_out)
    return info_out
