"""``fersuite-data``: build (or validate) a dataset's cache and report what is in it
(``conf/data_app.yaml``).

``fersuite-data data=fer2013 data.root=/data/fer2013`` decodes the dataset once into its
cache (or opens the existing one), prints split sizes, the per-class histogram of every
split, the image size and the valence/arousal coverage, and writes ``data_stats.json`` and a
grid of sample images per class (``samples.png``) into the run directory
(:mod:`fersuite.data.inspect`).
"""

from __future__ import annotations

import os

import hydra
from omegaconf import DictConfig, open_dict

from fersuite.apps import run_app, task_wrapper
from fersuite.config import CONFIG_DIR
from fersuite.data.inspect import inspect_dataset


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="data_app")
@task_wrapper
def hydra_main(cfg: DictConfig) -> None:
    with open_dict(cfg):
        cfg.paths.output_dir = cfg.paths.get("output_dir") or os.getcwd()
    inspect_dataset(cfg)


def main() -> None:
    """``fersuite-data``: bad input → one line, exit 2; failed run → exit 1 (fersuite.apps)."""
    run_app("data", hydra_main)


if __name__ == "__main__":
    main()
