"""`ends_sentence`: the chunker's own rule for where a sentence ends, for code that reassembles chunks."""

from __future__ import annotations

import pytest

from deltamem_agents.memory.chunking import chunk_text, ends_sentence, split_sentences


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("It rained.", True),
        ("Really?", True),
        ("Wait!", True),
        ("And then…", True),
        ('He said "go."', True),
        ("(Yes.)", True),
        ("[done.]", True),
        ("It rained", False),
        ("e.g", False),
        ("", False),
    ],
)
def test_a_sentence_ends_at_its_mark_and_closing_quotes(text, expected):
    assert ends_sentence(text) is expected


def test_every_sentence_the_chunker_splits_off_ends_a_sentence():
    text = 'First one. Second one? "Third!" (Fourth.) Last one.'
    sentences = split_sentences(text)
    assert len(sentences) == 5 and all(ends_sentence(s) for s in sentences)
    chunks = chunk_text(text * 20, max_chars=120, overlap_chars=40)
    assert len(chunks) > 1 and all(ends_sentence(c.text) for c in chunks)
