"""deltamem_agents.progress: what ``progress=`` arguments resolve to, and the plain reporter's lines."""

from __future__ import annotations

import io

import pytest

from deltamem_agents.progress import (
    NO_PROGRESS,
    NullProgress,
    PlainProgress,
    ProgressReporter,
    resolve_progress,
    shows_progress,
    tracked,
    use_default_reporter,
)


class Recorder:
    """A reporter that keeps every call."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def start(self, description, total=None, *, completed=0):
        self.calls.append(("start", description, total, completed))

    def advance(self, amount=1):
        self.calls.append(("advance", amount))

    def set_description(self, description):
        self.calls.append(("description", description))

    def set_status(self, status):
        self.calls.append(("status", status))

    def note(self, text):
        self.calls.append(("note", text))

    def close(self):
        self.calls.append(("close",))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_false_and_none_show_nothing_and_true_is_plain_stderr():
    assert resolve_progress(False) is NO_PROGRESS and resolve_progress(None) is NO_PROGRESS
    assert isinstance(resolve_progress(True), PlainProgress)
    assert isinstance(PlainProgress(), ProgressReporter) and isinstance(NullProgress(), ProgressReporter)
    assert not shows_progress(False) and not shows_progress(None) and not shows_progress(NO_PROGRESS)
    assert shows_progress(True) and shows_progress(Recorder())


def test_a_reporter_is_used_as_given_and_anything_else_is_refused():
    recorder = Recorder()
    assert resolve_progress(recorder) is recorder
    with pytest.raises(TypeError, match="bool or a ProgressReporter"):
        resolve_progress("yes")  # type: ignore[arg-type]


def test_an_application_installs_its_default_for_a_while():
    recorder = Recorder()
    with use_default_reporter(lambda: recorder):
        assert resolve_progress(True) is recorder
    assert isinstance(resolve_progress(True), PlainProgress)


def test_tracked_starts_and_closes_even_on_error():
    recorder = Recorder()
    with pytest.raises(RuntimeError), tracked(recorder, "work", total=3, completed=1) as bar:
        bar.advance()
        raise RuntimeError("boom")
    assert recorder.calls == [("start", "work", 3, 1), ("advance", 1), ("close",)]


def test_plain_progress_prints_lines_at_start_at_intervals_and_at_the_end():
    stream, clock = io.StringIO(), Clock()
    bar = PlainProgress(stream, interval=10, clock=clock)
    bar.start("replaying", 4)
    bar.advance()
    clock.now = 11
    bar.set_status("loss 1.5")
    bar.advance(2)  # within 10 s of the last line: not printed
    bar.note("halfway")
    clock.now = 12.5
    bar.advance()
    bar.close()
    bar.close()  # a second close prints nothing
    lines = stream.getvalue().splitlines()
    assert lines[0] == "replaying: 0/4 (0%) · 0.0s"
    assert lines[1] == "replaying: 1/4 (25%) · loss 1.5 · 11.0s"
    assert lines[2].endswith("] halfway")
    assert lines[3] == "replaying: 4/4 (100%) · loss 1.5 · done in 12.5s"
    assert len(lines) == 4 and "\x1b" not in stream.getvalue()


def test_plain_progress_without_total_and_restarted():
    stream, clock = io.StringIO(), Clock()
    bar = PlainProgress(stream, clock=clock)
    bar.start("loading")
    bar.start("converting", 2)  # ends "loading" first
    bar.close()
    assert stream.getvalue().splitlines() == [
        "loading · 0.0s", "loading · done in 0.0s", "converting: 0/2 (0%) · 0.0s", "converting: 0/2 (0%) · done in 0.0s",
    ]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_progress_rewrites_one_line_on_a_terminal():
    stream, clock = Terminal(), Clock()
    bar = PlainProgress(stream, clock=clock)
    bar.start("ingest", 2)
    clock.now = 1
    bar.advance()
    bar.close()
    text = stream.getvalue()
    assert text.count("\r") == 3 and text.endswith("ingest: 1/2 (50%) · done in 1.0s\n")


def test_plain_progress_never_fails_the_work_on_a_closed_stream():
    stream = io.StringIO()
    stream.close()
    bar = PlainProgress(stream)
    bar.start("x", 1)
    bar.advance()
    bar.note("y")
    bar.close()


def test_plain_progress_follows_a_redirected_stderr(capsys):
    with tracked(True, "to stderr", total=1) as bar:
        bar.advance()
    captured = capsys.readouterr()
    assert captured.out == "" and "to stderr: 1/1 (100%)" in captured.err


def test_a_benchmark_reports_steps_notes_and_resets_to_a_reporter():
    from deltamem_agents.bench.report import Progress

    recorder = Recorder()
    with Progress(recorder, 2, "bench") as bar:
        bar.step("first")
        bar.advance()
        bar.reset(5, "second phase")
    assert recorder.calls == [
        ("start", "bench", 2, 0), ("description", "first"), ("note", "first"), ("advance", 1),
        ("start", "second phase", 5, 0), ("note", "second phase"), ("close",),
    ]
    with Progress(False, 1, "quiet") as bar:  # nothing to show, nothing fails
        bar.step("x")
