"""Content deltas (a state-reading condition minus its other-conversation control, paired per
probe) and per-category scores, on hand-built answers whose differences are known."""

import pytest

from deltamem_agents.eval import (
    LOCOMO_CATEGORIES,
    Answer,
    category_scores,
    content_deltas,
)
from deltamem_agents.eval.breakdown import categories_markdown, deltas_markdown


def answer(condition, conversation, probe, kind, f1=None, recall=None, rules=None, category=None):
    return Answer(condition=condition, conversation=conversation, probe=probe, kind=kind, category=category,
                  question="q", gold="g", prediction="p", f1=f1, exact=None if f1 is None else float(f1 == 1.0),
                  recall=recall, rules=rules, prompt_tokens=10, latency_ms=1.0)


@pytest.fixture
def answers():
    return [
        answer("state", "c1", 0, "fact", 1.0, 1.0),
        answer("state", "c1", 1, "preference", 0.5, 1.0),
        answer("state", "c1", 2, "request", rules=[True, True]),
        answer("state", "c1", 3, "task", 0.0, 0.5),
        answer("state", "c2", 0, "fact", 0.0, 0.0),  # no control answer: left out
        answer("state_other", "c1", 0, "fact", 0.5, 0.0),
        answer("state_other", "c1", 1, "preference", 0.5, 0.5),
        answer("state_other", "c1", 2, "request", rules=[True, False]),
        answer("state_other", "c1", 3, "task", 0.0, 0.0),
        answer("state_other", "c1", 9, "fact", 1.0, 1.0),  # no state answer: left out
        answer("recent_window", "c1", 0, "fact", 0.0, 0.0),  # not a pair of a control
    ]


def test_deltas_are_paired_per_probe_in_points(answers):
    deltas = {(d.by, d.group): d for d in content_deltas(answers)}
    assert list(deltas) == [("kind", "fact"), ("kind", "preference"), ("kind", "task"), ("kind", "request"),
                            ("memory_kinds", "pref+instr+task"), ("overall", "overall")]
    assert all(d.condition == "state" and d.control == "state_other" for d in deltas.values())
    fact = deltas[("kind", "fact")]
    assert (fact.questions, fact.f1_points, fact.recall_points, fact.rules_points) == (1, 50.0, 100.0, None)
    assert (deltas[("kind", "preference")].f1_points, deltas[("kind", "preference")].recall_points) == (0.0, 50.0)
    request = deltas[("kind", "request")]
    assert (request.questions, request.requests, request.f1_points, request.rules_points) == (0, 1, None, 50.0)
    memory = deltas[("memory_kinds", "pref+instr+task")]
    assert (memory.questions, memory.f1_points, memory.recall_points) == (2, 0.0, 50.0)  # pooled, not a mean of kinds
    overall = deltas[("overall", "overall")]
    assert (overall.questions, overall.requests) == (3, 1)
    assert overall.f1_points == pytest.approx(100 * (0.5 - 1 / 3), abs=0.01)
    assert overall.recall_points == pytest.approx(100 * (2.5 / 3 - 0.5 / 3), abs=0.01)
    assert overall.rules_points == 50.0


def test_no_control_no_deltas(answers):
    assert content_deltas([a for a in answers if a.condition != "state_other"]) == []
    # a control whose probes are all other probes: nothing paired
    assert content_deltas([answer("state", "c1", 0, "fact", 1.0, 1.0),
                           answer("state_other", "c2", 0, "fact", 0.0, 0.0)]) == []


def test_the_hybrid_has_its_own_block(answers):
    more = [answer("hybrid", "c1", 0, "fact", 0.8, 1.0), answer("hybrid_other", "c1", 0, "fact", 0.6, 1.0)]
    deltas = content_deltas(answers + more)
    hybrid = [d for d in deltas if d.condition == "hybrid"]
    assert {d.control for d in hybrid} == {"hybrid_other"}
    assert [(d.group, d.f1_points, d.recall_points) for d in hybrid] == [("fact", 20.0, 0.0), ("overall", 20.0, 0.0)]
    table = "\n".join(deltas_markdown(deltas))
    assert "## What the state's content adds" in table
    assert "state − state_other F1" in table and "hybrid − hybrid_other F1" in table
    assert "| fact | 1 | 0 | +50.0 | +100.0 | - | +20.0 | +0.0 | - |" in table
    assert "| pref+instr+task | 2 | 0 | +0.0 | +50.0 | - | - | - | - |" in table


def locomo_answers():
    out = []
    for condition, scores in (("state", {"1": (0.5, 1.0), "2": (0.0, 0.0), "4": (1.0, 1.0)}),
                              ("state_other", {"1": (0.25, 0.5), "2": (0.0, 0.5), "4": (0.5, 1.0)})):
        for probe, (category, (f1, recall)) in enumerate(scores.items()):
            out.append(answer(condition, "locomo-x", probe, "locomo", f1, recall, category=category))
    return out


def test_scores_per_locomo_category_are_named():
    assert LOCOMO_CATEGORIES == {"1": "multi-hop", "2": "temporal", "3": "open-domain", "4": "single-hop",
                                 "5": "adversarial"}
    scores = category_scores(locomo_answers(), ["state", "state_other"])
    assert [(s.condition, s.category, s.name, s.questions, s.f1, s.recall) for s in scores] == [
        ("state", "1", "multi-hop", 1, 0.5, 1.0), ("state", "2", "temporal", 1, 0.0, 0.0),
        ("state", "4", "single-hop", 1, 1.0, 1.0),
        ("state_other", "1", "multi-hop", 1, 0.25, 0.5), ("state_other", "2", "temporal", 1, 0.0, 0.5),
        ("state_other", "4", "single-hop", 1, 0.5, 1.0),
    ]
    deltas = {(d.by, d.group): d for d in content_deltas(locomo_answers())}
    assert (deltas[("category", "multi-hop")].f1_points, deltas[("category", "multi-hop")].recall_points) == (25.0, 50.0)
    assert deltas[("category", "temporal")].recall_points == -50.0
    text = "\n".join(categories_markdown(scores, list(deltas.values())))
    assert "## By question category" in text
    for header in ("multi-hop (1, 1 q.) F1 / recall", "temporal (2, 1 q.) F1 / recall", "single-hop (4, 1 q.) F1 / recall"):
        assert header in text
    assert "open-domain (3" not in text  # no question of that category
    assert "| 5. δ-mem state | 50.0 / 100.0 | 0.0 / 0.0 | 100.0 / 100.0 |" in text
    assert "| state − state_other | +25.0 / +50.0 | +0.0 / -50.0 | +50.0 / +0.0 |" in text


def test_generated_probes_have_no_categories(answers):
    assert category_scores(answers, ["state", "state_other"]) == []
    assert categories_markdown([], []) == []
