"""Former home of ``fersuite-export``; the library is :mod:`fersuite.deploy`, the app
:mod:`fersuite.cli.export`. Kept so that ``fersuite.export`` names keep importing."""

from fersuite.cli.export import hydra_main, main, print_export
from fersuite.deploy.base import INPUT_NAME, OUTPUT_NAMES, ExportError, TupleOutput
from fersuite.deploy.exporter import FILES, ExportSettings, export_checkpoint, sidecar
from fersuite.deploy.onnx import OnnxModel, export_onnx
from fersuite.deploy.torchscript import export_torchscript
from fersuite.deploy.verify import compare_outputs, eval_face_batch

__all__ = [
    "FILES",
    "INPUT_NAME",
    "OUTPUT_NAMES",
    "ExportError",
    "ExportSettings",
    "OnnxModel",
    "TupleOutput",
    "compare_outputs",
    "eval_face_batch",
    "export_checkpoint",
    "export_onnx",
    "export_torchscript",
    "hydra_main",
    "main",
    "print_export",
    "sidecar",
]

if __name__ == "__main__":
    main()
