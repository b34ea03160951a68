"""The benchmarks' report helpers. Machine info and the JSON + Markdown writer live in
`deltamem_agents.reporting` (the server's load test writes the same format); they are named here
too so that ``deltamem_agents.bench.report`` keeps its imports."""

from __future__ import annotations

from deltamem_agents.progress import ProgressLike, resolve_progress
from deltamem_agents.reporting.files import write_report
from deltamem_agents.reporting.machine import machine_info
from deltamem_agents.reporting.tables import markdown_table

__all__ = ["machine_info", "write_report", "markdown_table"]


class Progress:
    """A benchmark's progress, reported to a `ProgressReporter` (``True``: the application's
    default, ``False``: none): a bar of ``total`` steps, and a line per step or note in a log."""

    def __init__(self, enabled: ProgressLike, total: int, description: str = "") -> None:
        self._reporter = resolve_progress(enabled)
        self._total, self._description = total, description

    def __enter__(self) -> Progress:
        self._reporter.start(self._description, self._total)
        return self

    def __exit__(self, *exc: object) -> None:
        self._reporter.close()

    def step(self, text: str) -> None:
        self._reporter.set_description(text)
        self.note(text)

    def note(self, text: str) -> None:
        self._reporter.note(text)

    def advance(self, count: int = 1) -> None:
        self._reporter.advance(count)

    def reset(self, total: int, description: str) -> None:
        self._reporter.start(description, total)
        self.note(description)
