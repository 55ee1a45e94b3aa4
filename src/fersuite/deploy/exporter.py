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
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from fersuite.card import ModelCard
from fersuite.checkpoint import load_model_from_checkpoint
from fersuite.config import ConfigError, settings_keys
from fersuite.deploy.base import INPUT_NAME, OUTPUT_NAMES, TupleOutput, quiet
from fersuite.deploy.onnx import OnnxModel, export_onnx
from fersuite.deploy.torchscript import export_torchscript
from fersuite.deploy.verify import compare_outputs, latencies, verification_inputs
from fersuite.utils.io import atomic_path, atomic_write_json

__all__ = ["EXPORTERS", "FILES", "ExportSettings", "export_checkpoint", "sidecar"]

FILES = {"onnx": "model.onnx", "torchscript": "model.pt"}
EXPORTERS = ("auto", "dynamo", "legacy")


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

    def __post_init__(self) -> None:
        if self.format not in FILES:
            raise ConfigError(f"export.format={self.format!r}; expected one of {tuple(FILES)}")
        if self.exporter not in EXPORTERS:
            raise ConfigError(f"export.exporter={self.exporter!r}; expected one of {EXPORTERS}")
        for key, lo in (
            ("opset", 7),
            ("max_batch", 2),
            ("verify_batch", 1),
            ("verify_faces", 0),
            ("seed", 0),
            ("latency_runs", 0),
            ("latency_warmup", 0),
            ("threads", 1),
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

    @classmethod
    def from_config(cls, cfg: DictConfig | dict[str, Any] | None) -> ExportSettings:
        raw = settings_keys(cfg, cls.__dataclass_fields__, "export")
        if "atol" in raw:
            raw["atol"] = float(raw["atol"])
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
        batch=[1, s.max_batch],
        preprocessing=f"image file -> EXIF orientation {exif} -> face crop "
        f"({card.face_crop.describe()}) resized to {card.crop_size}x{card.crop_size} -> "
        "gray/RGB to `channels` -> antialiased resize to size x size -> /255 -> "
        "(x - mean) / std (fersuite.card.load_input)",
    )
    return {
        "format": s.format,
        "file": FILES[s.format],
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
        "versions": {p: _version(p) for p in ("fersuite", "torch", "onnx", "onnxruntime")},
    }


def export_checkpoint(
    ckpt_path: str | os.PathLike[str], settings: ExportSettings, out_dir: str | os.PathLike[str]
) -> dict[str, Any]:
    """Export, verify and time one checkpoint; returns the sidecar written to ``model.json``."""
    s = settings
    ckpt = Path(ckpt_path)
    net, card = load_model_from_checkpoint(ckpt)
    net.eval()
    wrapper = TupleOutput(net).eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / FILES[s.format]
    gen = torch.Generator().manual_seed(s.seed)
    # Batch 2 for tracing, so that the batch dimension is not specialised to 1.
    example = torch.randn((2, card.in_chans, card.input_size, card.input_size), generator=gen)

    verification: dict[str, Any] = {"performed": False}
    latency: dict[str, Any] = {}
    with atomic_path(target) as tmp:
        if s.format == "onnx":
            info = export_onnx(wrapper, example, tmp, s.exporter, s.opset, s.max_batch)
            exported: Any = OnnxModel(tmp, threads=s.threads)
        else:
            info = export_torchscript(wrapper, example, tmp)
            with quiet():
                exported = torch.jit.load(str(tmp), map_location="cpu").eval()
        if s.verify:
            inputs = verification_inputs(card, s.verify_batch, s.verify_faces, s.seed)
            diffs = compare_outputs(net, exported, inputs, s.atol)
            worst = max(d for case in diffs.values() for d in case.values())
            verification = {
                "performed": True,
                "atol": s.atol,
                "max_abs_diff": worst,
                "cases": diffs,
                "backend": "onnxruntime" if s.format == "onnx" else "torch.jit",
            }
        if s.latency_runs > 0:
            latency = latencies(
                net, exported, card, s.latency_warmup, s.latency_runs, s.threads, s.seed
            )

    info_out = sidecar(card, s, info, ckpt)
    info_out["verification"] = verification
    info_out["latency_b1"] = latency
    atomic_write_json(out / "model.json", info_out)
    return info_out
