"""Progress bars for long work outside the training loop (cache building, the teacher pass,
``fersuite-predict``, ``fersuite-report``): rich on a terminal, silent otherwise.

A bar is drawn on stderr only when stderr is a terminal, so logs, CI output and pipes stay
clean; ``FERSUITE_PROGRESS=0`` turns bars off on a terminal too. A bar never fails the work it
reports on: if another live display is running (e.g. Lightning's ``RichProgressBar``), the work
goes on without one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.errors import LiveError
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["progress", "track"]

T = TypeVar("T")


def _enabled(console: Console) -> bool:
    if os.environ.get("FERSUITE_PROGRESS", "").strip() == "0":
        return False
    return console.is_terminal


@contextmanager
def progress(
    description: str, total: int | None, console: Console | None = None
) -> Iterator[Callable[[int], None]]:
    """Show a bar for ``total`` steps; yields ``advance(n)``. ``total=None``: no known end."""
    console = console or Console(stderr=True)
    if not _enabled(console):
        yield lambda n=1: None
        return
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    try:
        bar.start()
    except LiveError:  # another live display owns the terminal
        yield lambda n=1: None
        return
    task = bar.add_task(description, total=total)
    try:
        yield lambda n=1: bar.advance(task, n)
    finally:
        bar.stop()


def track(
    items: Iterable[T], description: str, total: int | None = None, console: Console | None = None
) -> Iterator[T]:
    """Iterate over ``items`` with a bar (``total`` defaults to ``len(items)`` when known)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress(description, total, console) as advance:
        for item in items:
            yield item
            advance(1)
