"""Split long text into bounded, sentence- and paragraph-aware chunks with a small overlap.

A chunk is always a contiguous slice of the input (``text[start:end]``), so the verbatim text
is kept and offsets can be stored. The pieces a chunk is built from are sentences (split at
``. ! ?`` followed by white space, and at line breaks); a sentence longer than the limit is
cut at word boundaries, and a word longer than the limit at characters.

Limits: ``max_chars`` always; ``max_tokens`` too when a ``count_tokens`` function is given
(e.g. the embedding model's tokenizer, whose window is 256 word pieces). Consecutive chunks of
one paragraph share their last sentences up to ``overlap_chars`` characters; a chunk that ends
at a paragraph break (chunks prefer to, once half full) starts the next without overlap.
`chunk_stream` does the same for text read in blocks, holding a bounded buffer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n\s*")
# A sentence ends at . ! ? … (plus closing quotes/brackets) before white space and a character
# that is not a lower-case letter ("e.g. this" stays whole), or at a line break.
_CLOSE = r"[.!?…][\"'”’)\]]*"
_SENTENCE_END = re.compile(_CLOSE + r"(?P<sep>[ \t]+)(?![a-z])|\s*\n\s*")
_ENDS_SENTENCE = re.compile(_CLOSE + "$")
_WORD = re.compile(r"\S+")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Chunk:
    """One chunk: ``text == source[start:end]``, ``index`` counts from 0."""

    index: int
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class _Piece:
    start: int
    end: int
    tokens: int
    paragraph_start: bool  # the first piece of a paragraph


def _spans(text: str, start: int, end: int, splitter: re.Pattern[str]) -> list[tuple[int, int]]:
    """Non-blank sub-spans of ``text[start:end]`` between matches of ``splitter`` (trimmed)."""
    out, pos = [], start
    for match in splitter.finditer(text, start, end):
        sep = match.span("sep") if "sep" in splitter.groupindex and match.group("sep") else match.span()
        out.append((pos, sep[0]))
        pos = sep[1]
    out.append((pos, end))
    trimmed = []
    for a, b in out:
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if a < b:
            trimmed.append((a, b))
    return trimmed


def ends_sentence(text: str) -> bool:
    """Whether ``text`` ends the way the chunker ends a sentence (. ! ? … and closing quotes or
    brackets), e.g. to find where overlapping chunks were cut when reassembling them."""
    return _ENDS_SENTENCE.search(text) is not None


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` (paragraph and line breaks also end a sentence)."""
    return [text[a:b] for p0, p1 in _spans(text, 0, len(text), _PARAGRAPH_BREAK) for a, b in _spans(text, p0, p1, _SENTENCE_END)]


def chunk_text(
    text: str,
    *,
    max_chars: int = 1000,
    overlap_chars: int = 150,
    max_tokens: int | None = None,
    count_tokens: Callable[[str], int] | None = None,
) -> list[Chunk]:
    """Chunks of ``text``: each at most ``max_chars`` characters (and ``max_tokens`` tokens).

    Returns ``[]`` for blank text and one chunk for text that fits. Token budgets are summed per
    sentence, which for word-piece tokenizers matches the count of the joined text.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    if overlap_chars < 0 or overlap_chars >= max_chars:
        raise ValueError(f"overlap_chars must be in [0, max_chars), got {overlap_chars} (max_chars={max_chars})")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1 or None, got {max_tokens}")
    count = count_tokens if (count_tokens is not None and max_tokens is not None) else None

    pieces = _pieces(text, max_chars, max_tokens if count else None, count)
    if not pieces:
        return []

    def fits(first: int, last: int) -> bool:
        if pieces[last].end - pieces[first].start > max_chars:
            return False
        return count is None or sum(p.tokens for p in pieces[first : last + 1]) <= max_tokens  # type: ignore[operator]

    def paragraph_end(i: int) -> int:
        j = i
        while j + 1 < len(pieces) and not pieces[j + 1].paragraph_start:
            j += 1
        return j

    spans: list[tuple[int, int]] = []  # (first piece, last piece), inclusive
    first = 0
    i = 1
    while i <= len(pieces):
        if i == len(pieces):
            spans.append((first, i - 1))
            break
        piece = pieces[i]
        half_full = pieces[i - 1].end - pieces[first].start >= max_chars // 2
        # Prefer to close at a paragraph break once the chunk is half full and the next
        # paragraph would not fit whole.
        if piece.paragraph_start and half_full and not fits(first, paragraph_end(i)):
            spans.append((first, i - 1))
            first = i
        elif not fits(first, i):
            spans.append((first, i - 1))
            first = _overlap_start(pieces, first, i, overlap_chars, fits)
        i += 1
    return [Chunk(n, pieces[a].start, pieces[b].end, text[pieces[a].start : pieces[b].end]) for n, (a, b) in enumerate(spans)]


def chunk_stream(
    blocks: Iterable[str],
    *,
    max_chars: int = 1000,
    overlap_chars: int = 150,
    max_tokens: int | None = None,
    count_tokens: Callable[[str], int] | None = None,
    buffer_chars: int | None = None,
) -> Iterator[Chunk]:
    """`chunk_text` over text that arrives in blocks (a file read piece by piece), in bounded memory.

    At most about ``buffer_chars`` characters (default ``max(16 * max_chars, 65536)``) plus one
    block are held. Each time the buffer fills it is chunked up to its last paragraph break
    (else its last sentence end, else its last white space); no chunk spans such a cut, and
    chunks do not overlap across it. ``Chunk.start``, ``end`` and ``index`` count in the whole
    stream, so ``chunk.text == stream[chunk.start:chunk.end]``.
    """
    limit = buffer_chars if buffer_chars is not None else max(16 * max_chars, 1 << 16)
    if limit < 1:
        raise ValueError(f"buffer_chars must be >= 1, got {buffer_chars}")
    options = {"max_chars": max_chars, "overlap_chars": overlap_chars, "max_tokens": max_tokens, "count_tokens": count_tokens}
    index = 0

    def emit(segment: str, offset: int) -> Iterator[Chunk]:
        nonlocal index
        for chunk in chunk_text(segment, **options):  # type: ignore[arg-type]
            yield Chunk(index, offset + chunk.start, offset + chunk.end, chunk.text)
            index += 1

    buffer, base = "", 0
    for block in blocks:
        buffer += block
        while len(buffer) >= limit:
            cut = _stream_cut(buffer)
            yield from emit(buffer[:cut], base)
            buffer, base = buffer[cut:], base + cut
    yield from emit(buffer, base)


def _stream_cut(buffer: str) -> int:
    """Where a buffered stream can be cut without splitting a piece: after its last complete
    paragraph break, else sentence end, else white space (complete: text follows it), else at its end."""
    for splitter in (_PARAGRAPH_BREAK, _SENTENCE_END, _SPACE):
        ends = [m.end() for m in splitter.finditer(buffer) if 0 < m.end() < len(buffer)]
        if ends:
            return ends[-1]
    return len(buffer)


def _overlap_start(pieces: list[_Piece], first: int, nxt: int, overlap_chars: int, fits: Callable[[int, int], bool]) -> int:
    """First piece of the chunk after ``pieces[first:nxt]``: its trailing sentences that fit the overlap."""
    if pieces[nxt].paragraph_start:
        return nxt
    start = nxt
    while (
        start - 1 > first  # never repeat the whole previous chunk
        and not pieces[start].paragraph_start
        and pieces[nxt - 1].end - pieces[start - 1].start <= overlap_chars
        and fits(start - 1, nxt)
    ):
        start -= 1
    return start


def _pieces(text: str, max_chars: int, max_tokens: int | None, count: Callable[[str], int] | None) -> list[_Piece]:
    out: list[_Piece] = []
    for p0, p1 in _spans(text, 0, len(text), _PARAGRAPH_BREAK):
        para_start = True
        for a, b in _spans(text, p0, p1, _SENTENCE_END):
            for s, e in _bounded(text, a, b, max_chars, max_tokens, count):
                out.append(_Piece(s, e, count(text[s:e]) if count else 0, para_start))
                para_start = False
    return out


def _bounded(
    text: str, a: int, b: int, max_chars: int, max_tokens: int | None, count: Callable[[str], int] | None
) -> list[tuple[int, int]]:
    """``text[a:b]`` as spans within the limits: whole if it fits, else word windows, else characters."""

    def ok(s: int, e: int) -> bool:
        return e - s <= max_chars and (count is None or count(text[s:e]) <= max_tokens)  # type: ignore[operator]

    if ok(a, b):
        return [(a, b)]
    words = [(m.start(), m.end()) for m in _WORD.finditer(text, a, b)]
    out: list[tuple[int, int]] = []
    cur: tuple[int, int] | None = None
    for ws, we in words:
        if cur is not None and ok(cur[0], we):
            cur = (cur[0], we)
            continue
        if cur is not None:
            out.append(cur)
        if ok(ws, we):
            cur = (ws, we)
        else:  # a single over-long "word" (e.g. a URL or base64): cut by characters
            cur = None
            s = ws
            while s < we:
                e = min(we, s + max_chars)
                while e - s > 1 and not ok(s, e):
                    e = s + max(1, (e - s) // 2)
                out.append((s, e))
                s = e
    if cur is not None:
        out.append(cur)
    return out
