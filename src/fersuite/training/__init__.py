"""The training pipeline as a library: pieces built from config and the run itself.

``fersuite-train`` (:mod:`fersuite.cli.train`) is a thin recipe over :func:`train`."""

from fersuite.training.builders import (
    build_callbacks,
    build_loggers,
    build_module,
    build_plugins,
    checkpoint_metadata,
    trained_net,
)
from fersuite.training.run import finish_run, make_trainer, prepare_run, train

__all__ = [
    "build_callbacks",
    "build_loggers",
    "build_module",
    "build_plugins",
    "checkpoint_metadata",
    "finish_run",
    "make_trainer",
    "prepare_run",
    "train",
    "trained_net",
]
