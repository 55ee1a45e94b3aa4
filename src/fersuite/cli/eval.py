"""``fersuite-eval``: test a trained checkpoint or exported model on any dataset
(``conf/eval.yaml``).

    fersuite-eval ckpt_path=logs/train/runs/<time>/checkpoints/best-epoch005.ckpt \\
        data=rafdb data.root=/data/rafdb
    fersuite-eval ckpt_path=logs/export/runs/<time>/model.onnx   # or model.pte / model.pt

The model, its input size, channels and normalisation come from the checkpoint (or the
exported model's ``model.json``; exported models run on the CPU); classes are matched by name
(:mod:`fersuite.evaluation`). Writes ``metrics.json`` (the ``test/*`` keys of
a training run), the test reports and ``run_info.json`` into the run dir.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from fersuite.apps import run_app, task_wrapper
from fersuite.config import CONFIG_DIR
from fersuite.evaluation import evaluate


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
@task_wrapper
def hydra_main(cfg: DictConfig) -> None:
    evaluate(cfg)


def main() -> None:
    """``fersuite-eval``: bad input → one line, exit 2; failed run → exit 1 (fersuite.apps)."""
    run_app("eval", hydra_main)


if __name__ == "__main__":
    main()
