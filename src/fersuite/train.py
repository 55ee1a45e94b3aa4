"""Old name of ``fersuite-train`` (``python -m fersuite.train`` still runs it): the app is
:mod:`fersuite.cli.train`, the training pipeline :mod:`fersuite.training`."""

from fersuite.cli.train import hydra_main, main
from fersuite.modules.affect_module import build_affect_module
from fersuite.training import (
    build_callbacks,
    build_loggers,
    build_module,
    build_plugins,
    checkpoint_metadata,
    finish_run,
    make_trainer,
    prepare_run,
    train,
    trained_net,
)

__all__ = [
    "build_affect_module",
    "build_callbacks",
    "build_loggers",
    "build_module",
    "build_plugins",
    "checkpoint_metadata",
    "finish_run",
    "hydra_main",
    "main",
    "make_trainer",
    "prepare_run",
    "train",
    "trained_net",
]

if __name__ == "__main__":
    main()
