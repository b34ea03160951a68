"""Generic prose that ships with every CPython, for checking (and keeping) the backbone's
language modelling when the adapter writes text that is not a conversation.

Two disjoint sources, so that what training sees is never what the check measures:

* `python_reference_passages`: the prose of Python's reference documentation
  (``pydoc_data.topics``); the empty-memory perplexity check reads it, no training run does.
* `stdlib_docstring_text`: the module docstrings of the standard library, read from the source
  files with `ast` (nothing is imported); the trainer's preservation term reads it.
"""

from __future__ import annotations

import ast
import re
import sysconfig
from pathlib import Path

_NOT_PROSE = re.compile(r"[{}<>=]|^\s|\.\.\.|>>>|::")


def prose_paragraphs(text: str, min_chars: int = 200) -> list[str]:
    """Paragraphs of running text (whitespace normalised), without code, tables or examples."""
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    return [p for p in paragraphs if len(p) > min_chars and not _NOT_PROSE.search(p)]


def python_reference_passages(count: int = 12, min_chars: int = 1500) -> list[str]:
    """The first ``count`` topics of the Python reference with at least ``min_chars`` of prose."""
    from pydoc_data.topics import topics

    passages: list[str] = []
    for key in sorted(topics):
        text = " ".join(prose_paragraphs(topics[key]))
        if len(text) >= min_chars:
            passages.append(text)
        if len(passages) >= count:
            break
    return passages


def stdlib_docstring_text(min_chars: int = 600, root: Path | None = None) -> list[str]:
    """The prose of the standard library's top-level module docstrings, one string per module
    with at least ``min_chars`` of it (28 modules, 37 000 characters on CPython 3.11)."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    texts: list[str] = []
    for path in sorted(root.glob("*.py")):
        try:
            docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        text = " ".join(prose_paragraphs(docstring or ""))
        if len(text) >= min_chars:
            texts.append(text)
    return texts
