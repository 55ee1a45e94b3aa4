"""``fersuite-train``: train, test and profile one configuration (``conf/train.yaml``).

The recipe: :func:`fersuite.training.train` validates the config, builds data, module
(``task.module``) and callbacks from it, fits, tests the best checkpoint and writes
``metrics.json``. ``train=false ckpt_path=<file>`` is an alias of ``fersuite-eval``.

Exit status: 0 done; 2 bad input (also: the run dir is in use by another run, a resume that
changes the config, a finished run resumed without a longer schedule); 1 failed run; 130
stopped with Ctrl-C (the line before names the command that resumes it).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence

import hydra
from omegaconf import DictConfig

from fersuite.apps import run_app, task_wrapper
from fersuite.config import CONFIG_DIR
from fersuite.runs.lock import release_all
from fersuite.training.run import train


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
@task_wrapper
def hydra_main(cfg: DictConfig) -> float | None:
    """The Hydra task: one training job; returns the value a sweep optimises."""
    metrics = train(cfg)
    key = cfg.get("optimized_metric")
    return metrics.get(key) if key else None


#: ``resume.allow_changes=[...]`` is how the command line spells the config key
#: ``resume_allow_changes``: ``resume`` itself holds ``auto`` | <run dir> | <file.ckpt> (a
#: string), which cannot also hold a key.
_ALLOW = re.compile(r"^([+~]*)resume\.allow_changes(?==|$)")


def command_line(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``resume.allow_changes`` written as its config key."""
    return [_ALLOW.sub(r"\1resume_allow_changes", a) for a in argv]


def main() -> None:
    """``fersuite-train``: bad input → one line, exit 2; failed run → exit 1 (fersuite.apps)."""
    sys.argv[1:] = command_line(sys.argv[1:])
    try:
        run_app("train", hydra_main)
    finally:
        release_all()  # the run dir's lock, however the run ended


if __name__ == "__main__":
    main()
