"""Progress as a reporter interface: library code says how far it got, the application draws it.

Library functions take ``progress: bool | ProgressReporter``. A reporter is used as given;
``False`` shows nothing; ``True`` asks for the application's default, which is `PlainProgress`
(plain lines on stderr, no terminal library) unless the application installed its own with
`use_default_reporter` — the CLI does, for the length of a command, to draw its bars
(deltamem_agents/cli/_progress.py). So no layer below the CLI needs a terminal-drawing library,
and programmatic users still see progress with ``True``.

This module is cross-cutting: it imports nothing of the SDK.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol, TextIO, runtime_checkable

__all__ = [
    "NO_PROGRESS",
    "NullProgress",
    "PlainProgress",
    "ProgressLike",
    "ProgressReporter",
    "resolve_progress",
    "shows_progress",
    "tracked",
    "use_default_reporter",
]


@runtime_checkable
class ProgressReporter(Protocol):
    """One task at a time: `start` begins one (replacing any current task), `close` ends it."""

    def start(self, description: str, total: float | None = None, *, completed: float = 0) -> None:
        """Begin a task of ``total`` units (``None``: unknown, a spinner), ``completed`` done already."""

    def advance(self, amount: float = 1) -> None:
        """``amount`` more units are done."""

    def set_description(self, description: str) -> None:
        """What the task is doing now (the bar's label)."""

    def set_status(self, status: str) -> None:
        """A short status shown after the count (a loss, a rate, the current item)."""

    def note(self, text: str) -> None:
        """A line worth keeping in a log (a reporter drawing on a terminal may leave it out)."""

    def close(self) -> None:
        """The task is over (also after an error)."""


ProgressLike = bool | ProgressReporter


class NullProgress:
    """Shows nothing: what ``progress=False`` resolves to."""

    def start(self, description: str, total: float | None = None, *, completed: float = 0) -> None:
        return None

    def advance(self, amount: float = 1) -> None:
        return None

    def set_description(self, description: str) -> None:
        return None

    def set_status(self, status: str) -> None:
        return None

    def note(self, text: str) -> None:
        return None

    def close(self) -> None:
        return None


NO_PROGRESS = NullProgress()


class PlainProgress:
    """Progress as plain text on a stream (stderr by default), readable in a log file too.

    On a terminal one line is rewritten in place (at most every ``tty_interval`` seconds);
    elsewhere a line is printed when a task starts, at most one every ``interval`` seconds
    while it runs, and one when it ends. Notes are printed as they come.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        interval: float = 10.0,
        tty_interval: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream  # None: sys.stderr when writing, so a redirected stderr is followed
        self._interval, self._tty_interval, self._clock = interval, tty_interval, clock
        self._active = False
        self._description, self._status = "", ""
        self._total: float | None = None
        self._completed = 0.0
        self._started = self._printed = 0.0
        self._open_line = False  # a rewritten line is on the terminal, not ended yet

    # -- the reporter -----------------------------------------------------------------------------
    def start(self, description: str, total: float | None = None, *, completed: float = 0) -> None:
        if self._active:
            self.close()
        self._active = True
        self._description, self._status, self._total, self._completed = description, "", total, float(completed)
        self._started = self._clock()
        self._show(force=True)

    def advance(self, amount: float = 1) -> None:
        self._completed += amount
        self._show()

    def set_description(self, description: str) -> None:
        self._description = description
        self._show()

    def set_status(self, status: str) -> None:
        self._status = status
        self._show()

    def note(self, text: str) -> None:
        self._end_line()
        self._write(f"[{time.strftime('%H:%M:%S')}] {text}\n")

    def close(self) -> None:
        if not self._active:
            return
        self._active = False
        self._show(force=True, final=True)
        self._end_line()

    # -- drawing ----------------------------------------------------------------------------------
    def line(self, *, final: bool = False) -> str:
        """The task as one line: ``label: 3/10 (30%) · status · 12s``."""
        parts = [self._description]
        if self._total:
            count = f"{_number(self._completed)}/{_number(self._total)} ({100 * self._completed / self._total:.0f}%)"
            parts[0] = f"{self._description}: {count}" if self._description else count
        if self._status:
            parts.append(self._status)
        elapsed = self._clock() - self._started
        parts.append(f"{'done in ' if final else ''}{elapsed:.1f}s")
        return " · ".join(part for part in parts if part)

    def _show(self, *, force: bool = False, final: bool = False) -> None:
        if not self._active and not final:
            return
        now = self._clock()
        tty = self._is_tty()
        if not force and now - self._printed < (self._tty_interval if tty else self._interval):
            return
        self._printed = now
        if tty:
            self._write(f"\r\x1b[2K{self.line(final=final)}")
            self._open_line = True
        else:
            self._write(self.line(final=final) + "\n")

    def _end_line(self) -> None:
        if self._open_line:
            self._write("\n")
            self._open_line = False

    def _target(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    def _is_tty(self) -> bool:
        isatty = getattr(self._target(), "isatty", None)
        try:
            return bool(isatty and isatty())
        except ValueError:  # a closed stream
            return False

    def _write(self, text: str) -> None:
        target = self._target()
        try:
            target.write(text)
            target.flush()
        except (OSError, ValueError):  # a closed or broken stream: progress must never fail the work
            pass


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


_default_factory: Callable[[], ProgressReporter] = PlainProgress


@contextmanager
def use_default_reporter(factory: Callable[[], ProgressReporter]) -> Iterator[None]:
    """Meanwhile ``progress=True`` resolves to ``factory()`` (how an application draws progress)."""
    global _default_factory
    previous = _default_factory
    _default_factory = factory
    try:
        yield
    finally:
        _default_factory = previous


def resolve_progress(progress: ProgressLike | None) -> ProgressReporter:
    """The reporter a ``progress`` argument stands for (``None`` counts as ``False``)."""
    if progress is None or progress is False:
        return NO_PROGRESS
    if progress is True:
        return _default_factory()
    if isinstance(progress, ProgressReporter):
        return progress
    raise TypeError(f"progress must be a bool or a ProgressReporter, got {type(progress).__name__}")


def shows_progress(progress: ProgressLike | None) -> bool:
    """Whether ``progress`` shows anything (e.g. to leave a library's own bars on)."""
    return progress is not None and progress is not False and not isinstance(progress, NullProgress)


@contextmanager
def tracked(
    progress: ProgressLike | None, description: str, total: float | None = None, *, completed: float = 0
) -> Iterator[ProgressReporter]:
    """``with tracked(progress, "replaying", total=n) as bar: ... bar.advance()``: start, then close."""
    reporter = resolve_progress(progress)
    reporter.start(description, total, completed=completed)
    try:
        yield reporter
    finally:
        reporter.close()
