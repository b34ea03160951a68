"""The CLI draws the library's progress with rich (cli/_progress.py); the library itself stays plain."""

from __future__ import annotations

import io

from rich.console import Console

from deltamem_agents.cli._progress import RichProgress, command_progress
from deltamem_agents.progress import (
    PlainProgress,
    ProgressReporter,
    resolve_progress,
    tracked,
)


def test_a_command_resolves_progress_true_to_rich_bars():
    with command_progress():
        assert isinstance(resolve_progress(True), RichProgress)
    assert isinstance(resolve_progress(True), PlainProgress)


def test_rich_progress_draws_bars_spinners_and_notes_in_a_log():
    out = io.StringIO()
    bar = RichProgress(Console(file=out, width=120, force_terminal=False))
    assert isinstance(bar, ProgressReporter)
    with tracked(bar, "training [δ-mem]", total=4) as reporter:
        reporter.advance(3)
        reporter.set_status("loss 1.234")
        reporter.note("a line for the log")
    bar.start("loading")
    bar.set_description("loading: converting")
    bar.close()
    bar.advance()  # after close: nothing happens
    text = out.getvalue()
    assert "training [δ-mem]" in text and "3/4" in text and "loss 1.234" in text  # markup is escaped
    assert "] a line for the log" in text and "loading: converting" in text
