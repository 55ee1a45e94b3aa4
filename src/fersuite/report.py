"""Old name of ``fersuite-report``: the app is :mod:`fersuite.cli.report`; the sweep report
callback lives in :mod:`fersuite.reporting.hydra_callback`."""

import sys

from fersuite.cli.report import main
from fersuite.reporting.hydra_callback import SweepReportCallback
from fersuite.reporting.terminal import print_report

__all__ = ["SweepReportCallback", "main", "print_report"]

if __name__ == "__main__":
    sys.exit(main())
