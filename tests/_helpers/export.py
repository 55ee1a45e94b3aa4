"""The ONNX exporter for tests that export only as a means to another end (a sidecar to check,
an exported file to evaluate, predict on, quantise or craft into an attack).

They use the legacy TorchScript-based exporter: ~2 s an export on 2 CPU cores, where the
default (``export.exporter=auto``: torch's dynamo exporter) takes ~20-50 s. The dynamo path is
tested where it is the subject: tests/export/test_export.py (per-architecture parity, the
dynamic batch axis, the ``auto`` fallback, the console script with the default exporter).

Only for ONNX: ExecuTorch (``.pte``) and TorchScript exports do not read ``exporter``.
"""

from __future__ import annotations

from typing import Any

#: ``ExportSettings(**FAST_ONNX, ...)`` / ``export_onnx(..., **FAST_ONNX)``.
FAST_ONNX: dict[str, Any] = {"exporter": "legacy"}

#: The same for an app's argv: ``fersuite-export ckpt_path=... *FAST_ONNX_OVERRIDES``.
FAST_ONNX_OVERRIDES: list[str] = ["export.exporter=legacy"]
