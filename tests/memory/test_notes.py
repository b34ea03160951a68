"""The retrieved-snippet note is written one way: by :func:`snippet_text`."""

from __future__ import annotations

from deltamem_agents.memory import hybrid
from deltamem_agents.memory.notes import SNIPPET_HEADER, snippet_text
from deltamem_agents.train.episodes import snippet_note


def test_snippet_text_layout_and_empty() -> None:
    assert snippet_text(["a", "b"]) == f"{SNIPPET_HEADER}\n- a\n- b"
    assert snippet_text(iter(["only"])) == f"{SNIPPET_HEADER}\n- only"
    assert snippet_text([]) == ""


def test_callers_share_the_header() -> None:
    assert hybrid.SNIPPET_HEADER is SNIPPET_HEADER
    assert snippet_note(["x"]) == snippet_text(["x"])
    assert hybrid.snippet_note(None) is None
