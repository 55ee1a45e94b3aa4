"""Former home of ``fersuite-predict``; the library is :mod:`fersuite.inference`, the app
:mod:`fersuite.cli.predict`. Kept so that ``fersuite.predict`` names keep importing."""

import sys

from fersuite.cli.predict import DEFAULTS, main, parse_args, print_predictions, run
from fersuite.inference import (
    IMAGE_SUFFIXES,
    PredictError,
    Predictor,
    find_images,
    load_predictor,
    predict_files,
    write_predictions,
)

__all__ = [
    "DEFAULTS",
    "IMAGE_SUFFIXES",
    "PredictError",
    "Predictor",
    "find_images",
    "load_predictor",
    "main",
    "parse_args",
    "predict_files",
    "print_predictions",
    "run",
    "write_predictions",
]

if __name__ == "__main__":
    sys.exit(main())
