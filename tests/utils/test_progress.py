"""Progress bars: drawn on a terminal, silent when piped or turned off, never in the way."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.live import Live

from fersuite.utils.progress import progress, track


def _console(terminal: bool) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=terminal, width=100), buf


def test_a_terminal_gets_a_bar_and_every_item() -> None:
    console, buf = _console(terminal=True)
    assert list(track(range(5), "reading jobs", console=console)) == [0, 1, 2, 3, 4]
    out = buf.getvalue()
    assert "reading jobs" in out and "5/5" in out


def test_piped_output_stays_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    console, buf = _console(terminal=False)
    assert list(track(range(3), "x", console=console)) == [0, 1, 2]
    assert buf.getvalue() == ""
    monkeypatch.setenv("FERSUITE_PROGRESS", "0")
    console, buf = _console(terminal=True)
    with progress("x", 3, console=console) as advance:
        advance(3)
    assert buf.getvalue() == ""


def test_another_live_display_does_not_break_the_work() -> None:
    console, _ = _console(terminal=True)
    with Live(console=console):  # e.g. Lightning's RichProgressBar
        assert list(track(range(4), "teacher outputs", console=console)) == [0, 1, 2, 3]


def test_long_library_work_shows_it_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from fersuite.data.synthetic import render_faces

    monkeypatch.setenv("FORCE_COLOR", "1")  # rich treats stderr as a terminal
    faces = render_faces(8, size=32, seed=0)
    assert len(faces.images) == 8
    assert "rendering 8 synthetic faces" in capsys.readouterr().err
