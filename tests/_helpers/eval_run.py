"""The training run whose checkpoint the evaluation tests evaluate (tests/cli/test_eval.py,
tests/evaluation/test_right_question.py, tests/evaluation/test_cross_dataset.py): trained once
per pytest worker by the session fixture ``trained_run(EVAL_RUN)`` and shared, read-only."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.conftest import TINY

#: The smallest model config (what is tested is the evaluation, not the model).
SMALLEST_MODEL = ["model=lightweight_cnn", "model.width_mult=0.25", "model.expansion_channels=32"]

#: Not the defaults of data=synthetic: the default data config gives different figures, so an
#: evaluation that ignored the checkpoint's own data would not match the run's test.
RUN_DATA = ["data.seed=3", "data.test_size=40", "data.difficulty=0.6"]

#: One epoch (2 steps) of the smallest model on tiny synthetic data, with the default callbacks
#: (the run's test/* keys are those an evaluation writes).
EVAL_RUN = [
    *TINY,
    "data.train_size=32",
    "data.val_size=16",
    "data.batch_size=16",
    *RUN_DATA,
    "logger=none",
    *SMALLEST_MODEL,
]


def eval_run(trained_run: Callable[[list[str]], Path]) -> tuple[Path, dict[str, float]]:
    """(best checkpoint, metrics.json) of the shared :data:`EVAL_RUN`. Read-only."""
    run = trained_run(EVAL_RUN)
    (ckpt,) = sorted((run / "checkpoints").glob("best-*.ckpt"))
    return ckpt, json.loads((run / "metrics.json").read_text())
