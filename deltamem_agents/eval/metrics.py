"""Scoring answers: token F1 and exact match (SQuAD-style normalisation), answer recall, and
rule checks for instructions (nickname used, reply language, word limit), all model-free."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from statistics import mean

from deltamem_agents.data.records import Rule

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation) | {"¡", "¿", "«", "»", "’", "‘", "“", "”"}


def normalize(text: str) -> str:
    """Lower case, no punctuation, no English articles, single spaces."""
    text = "".join(" " if ch in _PUNCTUATION else ch for ch in str(text).lower())
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, gold: str) -> float:
    pred, ref = normalize(prediction).split(), normalize(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize(prediction) == normalize(gold))


def answer_recall(prediction: str, gold: str) -> float:
    """Share of the gold tokens found in the prediction: the answer is there, however wordy."""
    pred, ref = Counter(normalize(prediction).split()), normalize(gold).split()
    if not ref:
        return 1.0
    return sum((pred & Counter(ref)).values()) / len(ref)


#: frequent short words per language; a reply is in the language whose words it uses most
STOPWORDS = {
    "English": {"the", "a", "to", "and", "is", "of", "you", "your", "for", "with", "it", "in", "at", "have", "good", "every", "time", "see", "are"},
    "French": {"le", "la", "les", "de", "des", "et", "est", "un", "une", "pour", "avec", "tu", "te", "ton", "bonne", "bon", "au", "à", "du", "chaque", "je", "vous"},
    "Spanish": {"el", "la", "los", "las", "de", "y", "es", "un", "una", "para", "con", "tu", "que", "buen", "buena", "cada", "por", "hasta", "te", "muy"},
    "German": {"der", "die", "das", "und", "ist", "ein", "eine", "mit", "zu", "bei", "dein", "deiner", "dir", "gute", "guten", "einen", "jeden", "bis", "ich", "du"},
}


def detect_language(text: str) -> str | None:
    """The language of ``STOPWORDS`` with the most hits in ``text`` (None: no hit at all)."""
    words = re.findall(r"[^\W\d_]+", text.lower())
    scores = {language: sum(w in vocab for w in words) for language, vocab in STOPWORDS.items()}
    best = max(scores, key=lambda k: scores[k])
    return best if scores[best] > 0 else None


def word_count(text: str) -> int:
    return len(re.findall(r"\S+", text))


def check_rule(reply: str, rule: Rule) -> bool:
    """Does ``reply`` follow ``rule``?"""
    if rule.kind == "nickname":
        return re.search(rf"\b{re.escape(rule.value.lower())}\b", reply.lower()) is not None
    if rule.kind == "language":
        return detect_language(reply) == rule.value
    if rule.kind == "max_words":
        return 0 < word_count(reply) < int(rule.value)
    raise ValueError(f"unknown rule kind {rule.kind!r}")


def average(values: Sequence[float | None]) -> float | None:
    """Mean of the measured values, rounded to 4 places, as every report stores a score; None when
    nothing was measured."""
    present = [v for v in values if v is not None]
    return round(mean(present), 4) if present else None
