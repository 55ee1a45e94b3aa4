"""The ``distill.*`` settings (``conf/task/distill.yaml``), for validation before a run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class DistillSettings:
    """Keys of the ``distill`` group; a misspelt key is an error with a suggestion
    (:mod:`fersuite.config_schema`). Read by :func:`fersuite.modules.distill_module.
    build_distill_module`."""

    teacher: Literal["checkpoint", "emonet"] = "checkpoint"
    teacher_ckpt: str | None = None
    teacher_weights: str | None = None
    teacher_classes: list[str] | None = None
    teacher_input_size: int | None = None
    teacher_outputs: Literal["live", "cached"] = "live"
    cache_dir: str | None = None
    cache_batch_size: int = 64
    cache_num_workers: int = 0
    teacher_metrics: bool = True
