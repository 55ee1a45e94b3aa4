"""``fersuite-export``: a trained checkpoint -> ONNX (or TorchScript), verified in the same command.

::

    fersuite-export ckpt_path=logs/train/runs/<time>/checkpoints/last.ckpt export.format=onnx

One input ``image`` (N, C, H, W; float32, normalised as in training; batch axis dynamic up to
``export.max_batch``) and three outputs ``expression`` (logits), ``valence``, ``arousal``.
ONNX uses the dynamo exporter with a fallback to the legacy one (``export.exporter=auto``).
Before the file is moved into place, ONNX Runtime (or the reloaded TorchScript module) runs
random inputs and synthetic face image files read with the model card
(:func:`fersuite.card.load_input`), and every output must match eager PyTorch within
``export.atol`` (1e-4) -- otherwise the command fails and writes nothing. Batch-1 latency of
the exported model and of eager PyTorch is measured with the same thread count. ``model.json``
(the sidecar) is the model card plus output names, opset, exporter, verification and latency.
The library is :mod:`fersuite.deploy`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, open_dict
from rich.table import Table

from fersuite.apps import run_app, task_wrapper
from fersuite.card import FaceCrop
from fersuite.config import CONFIG_DIR, require_ckpt_path
from fersuite.deploy.base import INPUT_NAME
from fersuite.deploy.calibration import export_data_config
from fersuite.deploy.exporter import ExportSettings, export_checkpoint
from fersuite.utils.console import make_console

log = logging.getLogger("fersuite.export")


def print_export(info: dict[str, Any], out_dir: Path) -> None:

    table = Table(title="fersuite export")
    table.add_column("item")
    table.add_column("value", justify="right")
    table.add_row("file", str(out_dir / info["file"]))
    table.add_row("exporter", str(info["exporter"]))
    if info.get("fallback_reason"):
        table.add_row("dynamo failure", str(info["fallback_reason"]))
    table.add_row("opset", str(info.get("opset")))
    inp = info["input"]
    table.add_row("input", f"{INPUT_NAME}: N x {inp['channels']} x {inp['size']} x {inp['size']}")
    table.add_row("face crop", FaceCrop.from_dict(info.get("face_crop") or {}).describe())
    if info.get("quantize"):
        table.add_row("quantize", str(info["quantize"]))
    ver = info.get("verification", {})
    if ver.get("performed") and ver.get("kind") == "agreement":
        table.add_row(
            f"top-1 agreement with fp32 ({ver['held_out_images']} held-out images)",
            f"{ver['top1_agreement']:.3f} (>= {ver['min_agreement']:g})",
        )
        table.add_row(
            "accuracy fp32 -> quantised",
            f"{ver['accuracy_fp32']:.3f} -> {ver['accuracy_quantized']:.3f} "
            f"(drop <= {ver['max_accuracy_drop']:g})",
        )
        table.add_row(
            "max |diff| valence / arousal",
            f"{ver['max_valence_diff']:.3g} / {ver['max_arousal_diff']:.3g}",
        )
    elif ver.get("performed"):
        table.add_row(
            f"max |diff| vs PyTorch ({ver['backend']})",
            f"{ver['max_abs_diff']:.2e} (<= {ver['atol']:g})",
        )
    lat = info.get("latency_b1") or {}
    if lat:
        key = lat.get("exported_key") or ("ort" if "ort_median_ms" in lat else "torchscript")
        table.add_row(
            f"latency b1, eager ({lat['threads']} thr)",
            f"{lat['eager_median_ms']:.2f} ms (p90 {lat['eager_p90_ms']:.2f})",
        )
        table.add_row(
            f"latency b1, {key}",
            f"{lat[f'{key}_median_ms']:.2f} ms (p90 {lat[f'{key}_p90_ms']:.2f})",
        )
    make_console().print(table)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
@task_wrapper
def hydra_main(cfg: DictConfig) -> None:
    with open_dict(cfg):
        cfg.paths.output_dir = cfg.paths.get("output_dir") or os.getcwd()
    require_ckpt_path(cfg, "fersuite-export")
    settings = ExportSettings.from_config(cfg.get("export"))
    out_dir = Path(settings.out_dir or cfg.paths.output_dir)
    data = None
    if settings.quantize is not None:  # calibration / held-out images: data= or the training data
        data = export_data_config(cfg, str(cfg.ckpt_path), f"export.quantize={settings.quantize}")
    info = export_checkpoint(cfg.ckpt_path, settings, out_dir, data=data)
    print_export(info, out_dir)
    log.info("settings: %s", asdict(settings))


def main() -> None:
    """``fersuite-export``: bad input → one line, exit 2; failed run → exit 1 (fersuite.apps)."""
    run_app("export", hydra_main)


if __name__ == "__main__":
    main()
