"""The note that places retrieved log snippets in a prompt, written one way everywhere.

The hybrid memory, training episodes, the evaluation's conditions, the growth benchmark and the
LlamaIndex memory all show the model retrieved text; the adapter was trained on this exact
layout, so every place that builds it calls :func:`snippet_text` (no torch import here).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["SNIPPET_HEADER", "snippet_text"]

SNIPPET_HEADER = "Notes retrieved from earlier in this conversation (verbatim):"


def snippet_text(texts: Iterable[str]) -> str:
    """The header, then one ``- text`` bullet per snippet ("" when there is none)."""
    bullets = "\n".join(f"- {text}" for text in texts)
    return f"{SNIPPET_HEADER}\n{bullets}" if bullets else ""
