"""Old name of ``fersuite-data``: the app is :mod:`fersuite.cli.data`, its library
:mod:`fersuite.data.inspect`."""

from fersuite.cli.data import hydra_main, main
from fersuite.data.inspect import (
    dataset_stats,
    inspect_dataset,
    print_report,
    run,
    save_sample_grid,
    va_coverage,
)

__all__ = [
    "dataset_stats",
    "hydra_main",
    "inspect_dataset",
    "main",
    "print_report",
    "run",
    "save_sample_grid",
    "va_coverage",
]

if __name__ == "__main__":
    main()
