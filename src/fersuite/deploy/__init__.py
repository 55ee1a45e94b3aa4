"""Deployment library: ONNX / TorchScript export of a trained checkpoint and its verification.

* :mod:`fersuite.deploy.base`: the exported signature (input ``image``, outputs
  ``expression``/``valence``/``arousal``) and :class:`ExportError`;
* :mod:`fersuite.deploy.onnx`: the dynamo/legacy ONNX exporters and :class:`OnnxModel`;
* :mod:`fersuite.deploy.torchscript`: tracing and loading TorchScript;
* :mod:`fersuite.deploy.verify`: parity of the exported model with eager PyTorch, latency;
* :mod:`fersuite.deploy.exporter`: :class:`ExportSettings`, the ``model.json`` sidecar (the
  model card plus the export's facts) and :func:`export_checkpoint`.

The app is :mod:`fersuite.cli.export`.
"""
