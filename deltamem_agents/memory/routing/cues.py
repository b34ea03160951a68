"""Verbatim-detail cues in a query: numbers, dates, names, quotes, "exactly", "what did I say".

A query with such cues asks for something δ-mem's lossy state cannot quote back, so the cue
policy votes for the text log. The patterns are plain regular expressions: cheap enough to run
on every turn, and readable enough to extend.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

__all__ = ["CUE_KINDS", "CueKind", "find_cues"]

CueKind = Literal["number", "date", "name", "quote", "exact", "recall", "question"]
CUE_KINDS: tuple[str, ...] = ("number", "date", "name", "quote", "exact", "recall", "question")


def _ci(*patterns: str) -> list[re.Pattern[str]]:
    return [re.compile(p, re.IGNORECASE) for p in patterns]


_NUM_WORD = r"(?:\d+|a|an|one|two|three|four|five|six|seven|eight|nine|ten|a few|few|several|a couple of)"
_DATE_PATTERNS: list[re.Pattern[str]] = [
    re.compile(r"\b\d{4}-\d{1,2}-\d{1,2}\b"),  # 2024-05-01
    re.compile(r"\b\d{1,2}[/.]\d{1,2}[/.]\d{2,4}\b"),  # 01/05/2024, 1.5.24
    *_ci(
        r"\b\d{1,2}:\d{2}(?::\d{2})?(?:\s*[ap]\.?m\b\.?)?",  # 14:30, 9:05 pm
        r"\b\d{1,2}\s*[ap]\.?m\b\.?",  # 9am, 9 p.m.
        r"\b(?:noon|midnight)\b",
        r"\b(?:january|february|april|june|july|august|september|october|november|december)\b",
        r"\b(?:mon|tues|wednes|thurs|fri|satur|sun)days?\b",
        r"\b(?:yesterday|tomorrow|tonight|last night|the day before|the other day)\b",
        r"\b(?:last|next|this past)\s+"
        r"(?:week(?:end)?|month|year|summer|winter|spring|autumn|fall|morning|evening|night)\b",
        rf"\b{_NUM_WORD}\s+(?:minutes?|hours?|days?|weeks?|months?|years?)\s+ago\b",
        r"\b(?:in|since|until|till|by|from|before|after)\s+(?:19|20)\d{2}\b",
        # "May" and "March" are also a verb and a modal: a date only next to a number or a preposition
        r"\b(?:march|may)\s+\d{1,2}(?:st|nd|rd|th)?\b",
        r"\b\d{1,2}(?:st|nd|rd|th)?\s+(?:of\s+)?(?:march|may)\b",
        r"\b(?:in|of|since|until|till|by|last|next|early|late|mid-?)\s+(?:march|may)\b",
    ),
    re.compile(r"\b(?:Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept?|Oct|Nov|Dec)\.?\s+\d{1,2}\b"),  # Dec 3
]
_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")
_QUOTE_PATTERNS: list[re.Pattern[str]] = [
    re.compile(r'"([^"\n]+)"'),
    re.compile(r"“([^”\n]+)”"),
    re.compile(r"(?<!\w)'([^'\n]+?)'(?!\w)"),  # not an apostrophe: it's, dogs' ...
    re.compile(r"(?<!\w)‘([^’\n]+?)’(?!\w)"),
]
_EXACT = _ci(r"\b(?:exact|exactly|verbatim|word[- ]for[- ]word|precise|precisely|quote[ds]?|quoting)\b")
_RECALL = _ci(
    r"\bwhat did (?:i|you|we|he|she|they)\s+(?:just\s+|actually\s+)?"
    r"(?:say|tell|mention|write|decide|agree|call|name|ask|suggest|recommend)\b",
    r"\bremind me\b",
    r"\b(?:did|have|had) (?:i|we|you) (?:ever\s+)?(?:tell|told|mention(?:ed)?|say|said|write|wrote)\b",
    r"\b(?:i|you|we) (?:said|told you|told me|mentioned|wrote)\b",
    r"\b(?:do|did) you (?:still\s+)?(?:remember|recall)\b",
    r"\bremember (?:when|what|where|who|which|that|the|my|our)\b",
    r"\b(?:last time|earlier|previously)\b",
)
_QUESTION = _ci(
    r"\bhow (?:much|many|long|old|far|often|big|tall)\b",
    r"\bwhen (?:did|do|does|is|was|were|will|are|should)\b",
    r"\bwhich\b",
    r"\bwhat (?:time|date|day|year|number|size|colou?r|name|address|price)\b",
    r"\bwhat (?:was|is|were) (?:the|my|our|your|his|her|their) (?:name|number|address|date|time|code|price|amount)\b",
    r"\bwho (?:is|was|did|were)\b",
)
_WORD_CAP = re.compile(r"(?<![\w'’])[^\W\d_][\w'’-]*")
_SENTENCE_OPENERS = "\"'“‘([{*-–—•"
_NOT_NAMES = frozenset({"I", "OK", "Ok"})


def _spans(patterns: Iterable[re.Pattern[str]], text: str) -> list[tuple[int, int, str]]:
    """Matches of all ``patterns``, in text order, leaving out those inside a longer one."""
    found = sorted({(m.start(), m.end(), m.group(0)) for p in patterns for m in p.finditer(text)},
                   key=lambda s: (s[0], -s[1]))  # fmt: skip
    outer: list[tuple[int, int, str]] = []
    for span in found:
        if not outer or span[1] > outer[-1][1]:
            outer.append(span)
    return outer


def _mask(text: str, spans: Iterable[tuple[int, int, str]]) -> str:
    chars = list(text)
    for start, end, _ in spans:
        chars[start:end] = " " * (end - start)
    return "".join(chars)


def _at_sentence_start(text: str, start: int) -> bool:
    before = text[:start]
    stripped = before.rstrip()
    if not stripped or "\n" in before[len(stripped) :]:
        return True
    stripped = stripped.rstrip(_SENTENCE_OPENERS).rstrip()
    return not stripped or stripped[-1] in ".!?…:;\n"


def find_cues(query: str) -> dict[str, list[str]]:
    """The verbatim-detail cues in ``query``: ``{kind: [matched text, ...]}`` for each kind found.

    Kinds (``CUE_KINDS``): ``number`` (digits outside dates), ``date`` (dates, times, month and
    weekday names, "yesterday", "last week", "3 days ago"), ``name`` (capitalised words not at a
    sentence start, other than "I"), ``quote`` ("..." or '...'), ``exact`` ("exactly",
    "verbatim", "word for word", "quote"), ``recall`` ("what did I say", "remind me", "you said"),
    ``question`` ("how much", "how many", "when did", "which", "what time").
    """
    found: dict[str, list[str]] = {}

    def add(kind: str, items: Iterable[str]) -> None:
        items = [i.strip() for i in items if i.strip()]
        if items:
            found.setdefault(kind, [])
            found[kind].extend(i for i in dict.fromkeys(items) if i not in found[kind])

    dates = _spans(_DATE_PATTERNS, query)
    add("date", (s for _, _, s in dates))
    undated = _mask(query, dates)
    add("number", (m.group(0) for m in _NUMBER.finditer(undated)))
    quotes = _spans(_QUOTE_PATTERNS, query)
    add("quote", (s for _, _, s in quotes))
    names = []
    for m in _WORD_CAP.finditer(undated):
        word = m.group(0)
        base = re.split(r"['’]", word, maxsplit=1)[0]
        if word[0].isupper() and base not in _NOT_NAMES and not _at_sentence_start(undated, m.start()):
            names.append(word)
    add("name", names)
    add("exact", (s for _, _, s in _spans(_EXACT, query)))
    add("recall", (s for _, _, s in _spans(_RECALL, query)))
    add("question", (s for _, _, s in _spans(_QUESTION, query)))
    return {kind: found[kind] for kind in CUE_KINDS if kind in found}
