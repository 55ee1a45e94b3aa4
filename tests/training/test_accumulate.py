"""trainer.accumulate_grad_batches reaches the Lightning trainer; bad values are one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from omegaconf import open_dict

from fersuite.config import validate_config
from fersuite.errors import ConfigError
from fersuite.runs.setup import make_trainer


@pytest.mark.parametrize(
    ("overrides", "expected"), [([], 1), (["trainer.accumulate_grad_batches=4"], 4)]
)
def test_accumulate_grad_batches_is_passed_on(
    cfg_factory: Any, tmp_path: Path, overrides: list[str], expected: int
) -> None:
    cfg = cfg_factory([*overrides, "logger=none", "callbacks=none"])
    with open_dict(cfg):
        del cfg["hydra"]  # a job's config
    validate_config(cfg)
    trainer, _ = make_trainer(cfg, tmp_path)
    assert trainer.accumulate_grad_batches == expected


@pytest.mark.parametrize("value", ["0", "2.5"])
def test_bad_accumulate_grad_batches_is_one_line(cfg_factory: Any, value: str) -> None:
    with pytest.raises(ConfigError, match=r"^trainer\.accumulate_grad_batches=.*integer >= 1"):
        validate_config(cfg_factory([f"trainer.accumulate_grad_batches={value}"]))
