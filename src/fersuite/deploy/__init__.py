"""Deployment library: ONNX / ExecuTorch / TorchScript export of a trained checkpoint, fp32 or
quantised, and its verification.

* :mod:`fersuite.deploy.base`: the exported signature (input ``image``, outputs
  ``expression``/``valence``/``arousal``) and :class:`ExportError`;
* :mod:`fersuite.deploy.onnx`: the dynamo/legacy ONNX exporters and :class:`OnnxModel`;
* :mod:`fersuite.deploy.onnx_quant`: ONNX Runtime int8 (static QDQ), dynamic and fp16;
* :mod:`fersuite.deploy.executorch`: ``.pte`` with the XNNPACK delegate (fp32, PT2E int8) and
  :class:`ExecuTorchModel`;
* :mod:`fersuite.deploy.torchscript`: tracing and loading TorchScript;
* :mod:`fersuite.deploy.calibration`: calibration (train split) and held-out (val split)
  images of a quantised export, from the checkpoint's recorded training data;
* :mod:`fersuite.deploy.verify`: parity of the exported model with eager PyTorch, agreement of
  a quantised one, latency;
* :mod:`fersuite.deploy.exporter`: :class:`ExportSettings`, the ``model.json`` sidecar (the
  model card plus the export's facts) and :func:`export_checkpoint`.

The app is :mod:`fersuite.cli.export`.
"""
