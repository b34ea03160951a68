"""`chunk_stream`: `chunk_text` over text read in blocks, in bounded memory, offsets in the whole stream."""

from __future__ import annotations

import random

import pytest

from deltamem_agents.memory.chunking import chunk_stream, chunk_text


def blocks_of(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def sample_text(seed: int = 0, paragraphs: int = 60) -> str:
    rng = random.Random(seed)
    words = "memory state session backbone adapter router log chunk sentence word".split()
    out = []
    for _ in range(paragraphs):
        sentences = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 25))).capitalize() + "." for _ in range(rng.randint(1, 6))]
        out.append(" ".join(sentences))
    return "\n\n".join(out) + "\n"


@pytest.mark.parametrize("block", [1, 7, 100, 10_000])
def test_a_stream_that_fits_the_buffer_chunks_as_the_whole_text(block):
    text = sample_text()
    streamed = list(chunk_stream(blocks_of(text, block), max_chars=300, overlap_chars=60))
    assert streamed == chunk_text(text, max_chars=300, overlap_chars=60)


@pytest.mark.parametrize("block", [13, 512])
def test_a_small_buffer_cuts_at_paragraphs_and_keeps_every_word(block):
    text = sample_text(1, paragraphs=200)
    chunks = list(chunk_stream(blocks_of(text, block), max_chars=250, overlap_chars=0, buffer_chars=1000))
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert all(c.text == text[c.start : c.end] and 0 < len(c.text) <= 250 for c in chunks)
    assert all(a.end <= b.start for a, b in zip(chunks, chunks[1:]))
    assert " ".join(c.text for c in chunks).split() == text.split()
    assert all(c.text[0].isupper() for c in chunks)  # cut at sentence or paragraph starts


def test_text_without_breaks_is_still_cut_in_bounded_pieces():
    text = "x" * 5000 + " " + "y" * 5000  # no sentence end, one space, two over-long "words"
    chunks = list(chunk_stream(blocks_of(text, 64), max_chars=100, overlap_chars=0, buffer_chars=700))
    assert all(c.text == text[c.start : c.end] and len(c.text) <= 100 for c in chunks)
    assert "".join(c.text for c in chunks) == text.replace(" ", "")


def test_blank_and_empty_streams_have_no_chunks():
    assert list(chunk_stream([])) == []
    assert list(chunk_stream(["  \n", "\n\t "])) == []
    with pytest.raises(ValueError, match="buffer_chars"):
        list(chunk_stream(["text"], buffer_chars=0))
