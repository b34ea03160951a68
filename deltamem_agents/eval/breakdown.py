"""Scores broken down, so that no result credits the state unfairly.

Two views the overall table cannot give:

- What the state's *content* adds: every condition that reads the state (5, 6) minus the same
  condition on another conversation's state (the controls ``state_other``, ``hybrid_other``),
  per probe kind, per source category and overall, in F1 and answer-recall points (and rule
  points for requests). A gain that the control keeps comes from the adapter being there (a
  style it learnt, corrections switched on by any non-empty state), not from what was written.
- LoCoMo's question categories (``Probe.category``), named as in the LoCoMo paper.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from statistics import mean
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from deltamem_agents.data.records import MEMORY_KINDS
from deltamem_agents.eval.conditions import LABELS, Answer
from deltamem_agents.eval.metrics import average
from deltamem_agents.reporting.tables import markdown_header, markdown_row, percent

#: LoCoMo's QA categories (see deltamem_agents/data/locomo.py); 5 (adversarial) is left out by default
LOCOMO_CATEGORIES: dict[str, str] = {"1": "multi-hop", "2": "temporal", "3": "open-domain", "4": "single-hop",
                                     "5": "adversarial"}
#: the order kinds are shown in
KINDS: tuple[str, ...] = ("fact", "preference", "instruction", "task", "request", "locomo")
#: (condition that reads this conversation's state, the same on another conversation's state)
CONTROLS: tuple[tuple[str, str], ...] = (("state", "state_other"), ("hybrid", "hybrid_other"))


def category_name(category: str) -> str:
    """``"1"`` -> ``"multi-hop"``; another source's category as it is."""
    return LOCOMO_CATEGORIES.get(category, category)


def _mean(values: Sequence[float]) -> float | None:
    return mean(values) if values else None


def _points(ours: float | None, other: float | None) -> float | None:
    return None if ours is None or other is None else round(100 * (ours - other), 2)


class ContentDelta(BaseModel):
    """One group of probes: a state-reading condition minus its other-conversation control."""

    model_config = ConfigDict(extra="forbid")

    condition: str = Field(description="state or hybrid")
    control: str = Field(description="state_other or hybrid_other")
    by: Literal["overall", "kind", "memory_kinds", "category"]
    group: str = Field(description="'overall', a probe kind, 'pref+instr+task' or a category's name")
    questions: int = Field(description="scored questions in the group (answered under both)")
    requests: int = Field(0, description="rule-checked requests in the group")
    f1_points: float | None = Field(None, description="mean token F1 difference, in points (100 = the whole scale)")
    recall_points: float | None = Field(None, description="mean answer recall difference, in points")
    rules_points: float | None = Field(None, description="share of rules followed, difference in points")


def _delta(ours: Sequence[Answer], other: Sequence[Answer], *, condition: str, control: str, by: str,
           group: str) -> ContentDelta | None:
    """Mean differences over the probes answered under both (paired: same conversation, same probe)."""
    theirs = {(a.conversation, a.probe): a for a in other}
    pairs = [(a, theirs[(a.conversation, a.probe)]) for a in ours if (a.conversation, a.probe) in theirs]
    if not pairs:
        return None
    questions = [(a, b) for a, b in pairs if a.f1 is not None and b.f1 is not None]
    requests = [(a, b) for a, b in pairs if a.rules and b.rules]

    def side(index: int, score: Callable[[Answer], float | None]) -> float | None:
        return _mean([v for pair in questions if (v := score(pair[index])) is not None])

    rules = [float(ok) for a, _ in requests for ok in a.rules or ()]
    other_rules = [float(ok) for _, b in requests for ok in b.rules or ()]
    return ContentDelta(
        condition=condition, control=control, by=by, group=group,  # type: ignore[arg-type]
        questions=len(questions), requests=len(requests),
        f1_points=_points(side(0, lambda a: a.f1), side(1, lambda a: a.f1)),
        recall_points=_points(side(0, lambda a: a.recall), side(1, lambda a: a.recall)),
        rules_points=_points(_mean(rules), _mean(other_rules)),
    )


def content_deltas(answers: Sequence[Answer]) -> list[ContentDelta]:
    """Per kind, preference+instruction+task, per category and overall, for each control that was run."""
    out: list[ContentDelta] = []
    for condition, control in CONTROLS:
        ours = [a for a in answers if a.condition == condition]
        other = [a for a in answers if a.condition == control]
        if not ours or not other:
            continue
        kinds = sorted({a.kind for a in ours}, key=lambda k: (KINDS.index(k) if k in KINDS else len(KINDS), k))
        groups: list[tuple[str, str, list[Answer]]] = [("kind", k, [a for a in ours if a.kind == k]) for k in kinds]
        memory = [a for a in ours if a.kind in MEMORY_KINDS]
        if memory:  # always: a goal is stated on it, even when only one of the three kinds was asked
            groups.append(("memory_kinds", "pref+instr+task", memory))
        for category in sorted({a.category for a in ours if a.category is not None}):
            groups.append(("category", category_name(category), [a for a in ours if a.category == category]))
        groups.append(("overall", "overall", ours))
        for by, group, chosen in groups:
            delta = _delta(chosen, other, condition=condition, control=control, by=by, group=group)
            if delta is not None:
                out.append(delta)
    return out


def signed_points(value: float | None) -> str:
    """A difference in points with its sign, ``-`` when not measured."""
    return "-" if value is None else f"{value:+.1f}"


def deltas_markdown(deltas: Sequence[ContentDelta]) -> list[str]:
    """The report's table "what the state's content adds": one row per group, a column block per control."""
    if not deltas:
        return []
    pairs = [(c, o) for c, o in CONTROLS if any(d.condition == c for d in deltas)]
    head = ["group", "questions", "requests"]
    for condition, control in pairs:
        head += [f"{condition} − {control} {metric}" for metric in ("F1", "recall", "rules")]
    lines = [
        "## What the state's content adds", "",
        ("Each condition that reads the state minus the same condition with another conversation's state, on the "
        "same probes, in points (F1, answer recall; rules followed for requests). Near 0: the gain comes from "
        "the adapter being there, not from what this conversation wrote."), "",
        *markdown_header(head),
    ]
    first = pairs[0][0]
    for row in [d for d in deltas if d.condition == first]:
        cells = [row.group if row.by != "category" else f"category {row.group}", str(row.questions), str(row.requests)]
        for condition, _ in pairs:
            match = next((d for d in deltas if d.condition == condition and d.by == row.by and d.group == row.group), None)
            cells += [signed_points(match.f1_points), signed_points(match.recall_points), signed_points(match.rules_points)] if match \
                else ["-", "-", "-"]
        lines.append(markdown_row(cells))
    return lines


class CategoryScores(BaseModel):
    """One condition on one category of questions."""

    model_config = ConfigDict(extra="forbid")

    condition: str
    category: str = Field(description="the source's category, e.g. LoCoMo's '1'")
    name: str = Field(description="its name, e.g. 'multi-hop'")
    questions: int
    f1: float | None
    recall: float | None


def category_scores(answers: Sequence[Answer], conditions: Sequence[str]) -> list[CategoryScores]:
    """F1 and answer recall per condition per category (empty when no probe has a category)."""
    categories = sorted({a.category for a in answers if a.category is not None and a.f1 is not None})
    out = []
    for condition in conditions:
        for category in categories:
            chosen = [a for a in answers if a.condition == condition and a.category == category and a.f1 is not None]
            if chosen:
                out.append(CategoryScores(
                    condition=condition, category=category, name=category_name(category), questions=len(chosen),
                    f1=average([a.f1 for a in chosen]), recall=average([a.recall for a in chosen]),
                ))
    return out


def f1_recall_cell(f1: float | None, recall: float | None) -> str:
    """``F1 / recall`` in percent, in one table cell (``-`` when neither was measured)."""
    return "-" if f1 is None and recall is None else f"{percent(f1)} / {percent(recall)}"


def categories_markdown(scores: Sequence[CategoryScores], deltas: Sequence[ContentDelta]) -> list[str]:
    """The per-category table (F1 / answer recall per condition), then the content deltas per category."""
    if not scores:
        return []
    categories = sorted({(s.category, s.name) for s in scores})
    counts = {s.category: s.questions for s in scores}
    head = ["condition", *[f"{name} ({c}, {counts[c]} q.) F1 / recall" for c, name in categories]]
    lines = ["## By question category", "",
             ("Token F1 / answer recall, in %, per category of the source (LoCoMo's numbering: 1 multi-hop, "
             "2 temporal, 3 open-domain, 4 single-hop)."), "", *markdown_header(head)]
    for condition in dict.fromkeys(s.condition for s in scores):
        by = {s.category: s for s in scores if s.condition == condition}
        lines.append(markdown_row([LABELS.get(condition, condition),
                                   *[f1_recall_cell(by[c].f1, by[c].recall) if c in by else "-" for c, _ in categories]]))
    per_category = [d for d in deltas if d.by == "category"]
    if per_category:
        lines += ["", *markdown_header(["control", *[f"{name} ({c}) F1 / recall points" for c, name in categories]])]
        for condition, control in CONTROLS:
            by_name = {d.group: d for d in per_category if d.condition == condition}
            if by_name:
                lines.append(markdown_row([f"{condition} − {control}", *[
                    f"{signed_points(by_name[n].f1_points)} / {signed_points(by_name[n].recall_points)}" if n in by_name else "-"
                    for _, n in categories]]))
    return lines
