"""How the command line draws progress: rich bars on stderr, behind the library's `ProgressReporter`.

The library only reports (deltamem_agents/progress.py); `command_progress` makes every
``progress=True`` inside a command resolve to a `RichProgress`, so the commands keep their bars
while programmatic users get plain lines.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from deltamem_agents.cli._common import err_console
from deltamem_agents.progress import use_default_reporter


class RichProgress:
    """A `ProgressReporter` drawn by rich: a bar with a count when the total is known, else a spinner.

    A new `start` ends the current bar (it stays on screen unless ``transient``). Notes are
    printed only when the console is not a terminal (a log file), where the bar is not redrawn.
    """

    def __init__(self, console: Console | None = None, *, transient: bool = False) -> None:
        self.console = console or err_console
        self.transient = transient
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def start(self, description: str, total: float | None = None, *, completed: float = 0) -> None:
        self.close()
        if total is None:
            columns = (SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.fields[status]}"), TimeElapsedColumn())
        else:
            columns = (
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(), TimeRemainingColumn(),
            )
        self._progress = Progress(*columns, console=self.console, transient=self.transient)
        self._progress.start()
        self._task = self._progress.add_task(escape(description), total=total, completed=completed, status="")

    def advance(self, amount: float = 1) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, amount)

    def set_description(self, description: str) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, description=escape(description))

    def set_status(self, status: str) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, status=escape(status))

    def note(self, text: str) -> None:
        if not self.console.is_terminal:
            self.console.print(f"[{time.strftime('%H:%M:%S')}] {text}", markup=False, highlight=False, soft_wrap=True)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
        self._progress = self._task = None


@contextmanager
def command_progress() -> Iterator[None]:
    """While a command runs, ``progress=True`` in the library draws a `RichProgress` on stderr."""
    with use_default_reporter(RichProgress):
        yield


def byte_progress(console: Console | None = None) -> Progress:
    """`deltamem ingest`'s bar: bytes read of the input, messages written so far, time left."""
    return Progress(
        TextColumn("[bold]ingest[/] {task.description}"), BarColumn(), DownloadColumn(), TextColumn("{task.fields[parts]} parts"),
        TimeRemainingColumn(), console=console or err_console,
    )


__all__ = ["RichProgress", "byte_progress", "command_progress"]
