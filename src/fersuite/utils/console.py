"""The rich console every fersuite table is printed on."""

from __future__ import annotations

import os

from rich.console import Console

__all__ = ["make_console"]

# Wide enough for the profile/report tables; used only when output is not a terminal (logs,
# CI, `make train | tee`), where rich would otherwise assume 80 columns and truncate cells.
PIPE_WIDTH = 160


def make_console() -> Console:
    """A rich Console: the terminal's width on a terminal, ``PIPE_WIDTH`` when piped.

    ``COLUMNS`` in the environment still wins, as it does for rich itself.
    """
    console = Console()
    if console.is_terminal or "COLUMNS" in os.environ:
        return console
    return Console(width=PIPE_WIDTH)
