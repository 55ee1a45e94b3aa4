"""``fersuite-profile``: params, MACs, latency, throughput and memory of one model, no
training (``conf/profile.yaml``; ``--multirun model=a,b`` profiles several).

Writes ``profile.json`` and ``profile.csv`` into the run dir and prints a table
(:mod:`fersuite.reporting.profiles`). In a multirun the sweep report callback merges the
records of every job into ``<sweep dir>/profile.{json,csv}``.
"""

from __future__ import annotations

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig, open_dict

from fersuite.apps import run_app, task_wrapper
from fersuite.config import CONFIG_DIR
from fersuite.reporting.profiles import print_profile, profile_config, write_profile


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="profile")
@task_wrapper
def hydra_main(cfg: DictConfig) -> None:
    with open_dict(cfg):
        cfg.paths.output_dir = cfg.paths.get("output_dir") or os.getcwd()
    out_dir = Path(cfg.paths.output_dir)
    records = profile_config(cfg)
    write_profile(out_dir, records)
    print_profile(records)
    print(f"profile: {out_dir / 'profile.json'}")


def main() -> None:
    """``fersuite-profile``: bad input → one line, exit 2; failed run → exit 1 (fersuite.apps)."""
    run_app("profile", hydra_main)


if __name__ == "__main__":
    main()
