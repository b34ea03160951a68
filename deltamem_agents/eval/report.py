"""Aggregating answers into an `EvalReport`: JSON, a Markdown table and a bar chart.

Token F1 / exact match / answer recall are averaged over questions (requests have no gold
span; their replies are scored by rule checks). "memory kinds" are the preference, instruction
and task-state questions the issue's first goal is about. Answer recall stands beside F1
everywhere: a wordy reply that holds the answer scores low F1 but full recall, and a state that
only teaches the model to answer briefly raises F1 without raising recall. The content deltas,
the per-category scores (eval/breakdown.py) and the free-chat check (eval/repetition.py) are
added when their conditions, categories or prompts were run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from statistics import mean
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from deltamem_agents.data.records import MEMORY_KINDS
from deltamem_agents.eval.breakdown import (
    CategoryScores,
    ContentDelta,
    categories_markdown,
    deltas_markdown,
    f1_recall_cell,
    signed_points,
)
from deltamem_agents.eval.conditions import LABELS, Answer, EvalConfig
from deltamem_agents.eval.metrics import average
from deltamem_agents.eval.repetition import (
    RATIO_GOAL,
    FreeChatResult,
    free_chat_markdown,
)
from deltamem_agents.reporting.files import write_json_and_markdown
from deltamem_agents.reporting.plotting import pyplot, save_figure
from deltamem_agents.reporting.tables import markdown_header, markdown_row, percent


class ConditionSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    condition: str
    label: str
    questions: int
    f1: float | None = None
    exact: float | None = None
    recall: float | None = None
    f1_by_kind: dict[str, float] = Field(default_factory=dict)
    recall_by_kind: dict[str, float] = Field(default_factory=dict)
    f1_memory_kinds: float | None = Field(None, description="preference + instruction + task questions")
    recall_memory_kinds: float | None = Field(None, description="answer recall on the same questions")
    rules_followed: float | None = Field(None, description="share of instruction rules the request replies follow")
    prompt_tokens: float
    latency_ms: float


class Goal(BaseModel):
    name: str
    met: bool | None
    detail: str


class EvalReport(BaseModel):
    """Everything `deltamem eval` measured, and how."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    conversations: int
    probes: int
    backbone: str
    adapter: str | None
    config: EvalConfig
    summaries: list[ConditionSummary]
    goals: list[Goal]
    state_write_ms_per_conversation: float | None = None
    full_history_prefill_ms_per_conversation: float | None = None
    history_tokens_mean: float
    perplexity: dict[str, Any] | None = None
    content_deltas: list[ContentDelta] = Field(
        default_factory=list, description="state / hybrid minus the same on another conversation's state")
    categories: list[CategoryScores] = Field(default_factory=list, description="per condition per source category")
    free_chat: FreeChatResult | None = Field(None, description="repeated-4-gram share of free replies, state vs bare")
    hardware: dict[str, Any]
    command: str
    wall_time_s: float
    answers: list[Answer]


def summarize(condition: str, answers: Sequence[Answer]) -> ConditionSummary:
    questions = [a for a in answers if a.f1 is not None]
    kinds = sorted({a.kind for a in questions})
    by_kind = {k: average([a.f1 for a in questions if a.kind == k]) or 0.0 for k in kinds}
    recall_by_kind = {k: average([a.recall for a in questions if a.kind == k]) or 0.0 for k in kinds}
    memory = [a for a in questions if a.kind in MEMORY_KINDS]
    rules = [ok for a in answers if a.rules for ok in a.rules]
    return ConditionSummary(
        condition=condition, label=LABELS.get(condition, condition), questions=len(questions),
        f1=average([a.f1 for a in questions]), exact=average([a.exact for a in questions]), recall=average([a.recall for a in questions]),
        f1_by_kind=by_kind, recall_by_kind=recall_by_kind, f1_memory_kinds=average([a.f1 for a in memory]),
        recall_memory_kinds=average([a.recall for a in memory]), rules_followed=average([float(r) for r in rules]),
        prompt_tokens=round(mean(a.prompt_tokens for a in answers), 1) if answers else 0.0,
        latency_ms=round(mean(a.latency_ms for a in answers), 1) if answers else 0.0,
    )


def _recall_gap(a: float | None, b: float | None) -> str:
    """The same comparison in answer recall, for a goal's detail."""
    if a is None or b is None:
        return ""
    return f"; answer recall {100 * (a - b):+.1f} points ({100 * a:.1f} vs {100 * b:.1f})"


#: the state-content goals (points of the content deltas, state / hybrid minus the same on another
#: conversation's state); on generated conversations:
CONTENT_RECALL_GOAL = 20.0  # state − state_other, answer recall, on facts and on pref+instr+task
HYBRID_CONTENT_F1_GOAL = 5.0  # hybrid − hybrid_other, F1 overall ...
HYBRID_F1_FLOOR = 0.70  # ... with the hybrid itself at >= 70 F1
#: ... and on LoCoMo (probes with categories), whose conversations the adapter never trained on:
LOCOMO_HYBRID_F1_GOAL = 3.0  # hybrid − hybrid_other, F1 overall
LOCOMO_STATE_RECALL_GOAL = 5.0  # state − state_other, answer recall overall


def _find(deltas: Sequence[ContentDelta], condition: str, by: str, group: str) -> ContentDelta | None:
    return next((d for d in deltas if d.condition == condition and d.by == by and d.group == group), None)


def _points_detail(delta: ContentDelta) -> str:
    """F1 and recall points of one content delta, for a goal's detail."""
    return (f"F1 {signed_points(delta.f1_points)} points, answer recall {signed_points(delta.recall_points)} points "
            f"({delta.questions} questions)")


def _content_goals(summaries: dict[str, ConditionSummary], deltas: Sequence[ContentDelta], locomo: bool) -> list[Goal]:
    """Does what *this* conversation wrote help, beyond any state being there? Stated on the paired
    content deltas (`content_deltas`): recall for the state alone (a short-answer style learnt by
    the adapter lifts F1 under the control as much), F1 for the hybrid, whose notes hold the words."""
    goals: list[Goal] = []

    def recall_goal(delta: ContentDelta | None, goal: float, what: str) -> None:
        if delta is not None and delta.recall_points is not None:
            goals.append(Goal(name=f"content: state − state_other >= +{goal:.0f} answer-recall points {what}",
                              met=delta.recall_points >= goal, detail=_points_detail(delta)))

    def hybrid_goal(goal: float, floor: float | None) -> None:
        delta, hybrid = _find(deltas, "hybrid", "overall", "overall"), summaries.get("hybrid")
        if delta is None or delta.f1_points is None:
            return
        met = delta.f1_points >= goal
        name = f"content: hybrid − hybrid_other >= +{goal:.0f} F1 points"
        detail = _points_detail(delta)
        if floor is not None:
            f1 = hybrid.f1 if hybrid is not None else None
            met = met and f1 is not None and f1 >= floor
            name += f", with the hybrid >= {100 * floor:.0f} F1"
            detail += f"; hybrid {percent(f1)} F1 / {percent(hybrid.recall if hybrid else None)} recall"
        goals.append(Goal(name=name, met=met, detail=detail))

    if locomo:
        hybrid_goal(LOCOMO_HYBRID_F1_GOAL, None)
        recall_goal(_find(deltas, "state", "overall", "overall"), LOCOMO_STATE_RECALL_GOAL, "overall (LoCoMo)")
    else:
        recall_goal(_find(deltas, "state", "kind", "fact"), CONTENT_RECALL_GOAL, "on facts")
        recall_goal(_find(deltas, "state", "memory_kinds", "pref+instr+task"), CONTENT_RECALL_GOAL,
                    "on preference/instruction/task")
        hybrid_goal(HYBRID_CONTENT_F1_GOAL, HYBRID_F1_FLOOR)
    return goals


def check_goals(summaries: dict[str, ConditionSummary], free_chat: FreeChatResult | None = None,
                deltas: Sequence[ContentDelta] = (), *, locomo: bool | None = None) -> list[Goal]:
    """The issue's goals, each with its margin (stated on F1, with answer recall beside it); the
    state-content goals on ``deltas`` (`content_deltas`) when the controls ran, the LoCoMo ones
    when ``locomo`` (default: some delta is per category, i.e. the probes have categories); the
    free-chat goal when that check ran."""
    goals = []
    state, window = summaries.get("state"), summaries.get("recent_window")
    if state and window and state.f1_memory_kinds is not None and window.f1_memory_kinds is not None:
        gap = 100 * (state.f1_memory_kinds - window.f1_memory_kinds)
        goals.append(Goal(name="state beats recent window by >= 10 F1 points on preference/instruction/task",
                          met=gap >= 10, detail=f"{gap:+.1f} points ({100 * state.f1_memory_kinds:.1f} vs {100 * window.f1_memory_kinds:.1f})"
                          + _recall_gap(state.recall_memory_kinds, window.recall_memory_kinds)))
    hybrid, rag, full = summaries.get("hybrid"), summaries.get("rag"), summaries.get("full_history")
    if hybrid and rag and "fact" in hybrid.f1_by_kind and "fact" in rag.f1_by_kind:
        gap = 100 * (hybrid.f1_by_kind["fact"] - rag.f1_by_kind["fact"])
        goals.append(Goal(name="hybrid >= RAG only on facts", met=gap >= 0,
                          detail=f"{gap:+.1f} points ({100 * hybrid.f1_by_kind['fact']:.1f} vs {100 * rag.f1_by_kind['fact']:.1f})"
                          + _recall_gap(hybrid.recall_by_kind.get("fact"), rag.recall_by_kind.get("fact"))))
    if hybrid and full and hybrid.f1 is not None and full.f1 is not None:
        gap = 100 * (hybrid.f1 - full.f1)
        share = hybrid.prompt_tokens / full.prompt_tokens if full.prompt_tokens else float("inf")
        goals.append(Goal(name="hybrid >= full history overall with <= 25% of its prompt tokens", met=gap >= 0 and share <= 0.25,
                          detail=f"{gap:+.1f} F1 points ({100 * hybrid.f1:.1f} vs {100 * full.f1:.1f})"
                                 f"{_recall_gap(hybrid.recall, full.recall)}; prompt tokens "
                                 f"{hybrid.prompt_tokens:.0f} vs {full.prompt_tokens:.0f} = {100 * share:.1f}%"))
    # Controls: does the state's *content* matter, or only that a state is there?
    for ours, other, what in (("state", "state_other", "5"), ("hybrid", "hybrid_other", "6")):
        a, b = summaries.get(ours), summaries.get(other)
        if a and b and a.f1 is not None and b.f1 is not None:
            gap = 100 * (a.f1 - b.f1)
            goals.append(Goal(name=f"control: condition {what} beats itself with another conversation's state",
                              met=gap > 0, detail=f"{gap:+.1f} F1 points ({100 * a.f1:.1f} vs {100 * b.f1:.1f})"
                              f"{_recall_gap(a.recall, b.recall)}; "
                              "0 means the gain comes from the adapter, not from what the state holds"))
    if locomo is None:
        locomo = any(d.by == "category" for d in deltas)
    goals += _content_goals(summaries, deltas, locomo)
    if free_chat is not None and free_chat.prompts:
        ratio = "-" if free_chat.ratio is None else f"{free_chat.ratio:.2f}"
        goals.append(Goal(name=f"free chat: the state's replies repeat <= {RATIO_GOAL}x the bare backbone's "
                               f"(repeated {free_chat.n}-gram share)", met=free_chat.met,
                          detail=f"ratio {ratio} ({100 * free_chat.adapter_share:.1f}% vs {100 * free_chat.bare_share:.1f}%, "
                                 f"{free_chat.prompts} prompts, up to {free_chat.free_tokens} tokens)"))
    return goals


def _kinds(report: EvalReport) -> list[str]:
    return sorted({k for s in report.summaries for k in s.f1_by_kind})


def markdown(report: EvalReport) -> str:
    kinds = _kinds(report)
    head = ["condition", "F1", "EM", "recall", *[f"{k} F1 / recall" for k in kinds], "pref+instr+task F1 / recall",
            "rules followed", "prompt tokens", "latency ms"]
    lines = [
        f"# δ-mem evaluation: {report.dataset}",
        "",
        (f"Generated by `{report.command}`; regenerate rather than edit. Backbone `{report.backbone}`, adapter "
        f"`{report.adapter or 'none'}`; {report.conversations} conversations, {report.probes} probes "
        f"(history {report.history_tokens_mean:.0f} tokens on average, window {report.config.window_tokens} tokens). "
        f"Scores are percentages (recall: answer recall, the share of the gold answer's words in the reply); machine: "
        f"{report.hardware.get('platform')}, {report.hardware.get('threads')} threads, "
        f"wall time {report.wall_time_s / 60:.1f} min."),
        "",
        *markdown_header(head),
    ]
    for s in report.summaries:
        row = [s.label, percent(s.f1), percent(s.exact), percent(s.recall),
               *[f1_recall_cell(s.f1_by_kind.get(k), s.recall_by_kind.get(k)) for k in kinds],
               f1_recall_cell(s.f1_memory_kinds, s.recall_memory_kinds), percent(s.rules_followed), f"{s.prompt_tokens:.0f}",
               f"{s.latency_ms:.0f}"]
        lines.append(markdown_row(row))
    if report.state_write_ms_per_conversation is not None:
        lines += ["", (f"Writing a history into the state took {report.state_write_ms_per_conversation / 1e3:.1f} s per "
                  "conversation on average (once per conversation, not counted in the latencies above).")]
    if report.full_history_prefill_ms_per_conversation is not None:
        lines += ["", (f"Prefilling the full history took {report.full_history_prefill_ms_per_conversation / 1e3:.1f} s per "
                  "conversation on average (once; its KV cache is kept between that conversation's questions).")]
    if report.goals:
        lines += ["", "## Goals", "", *markdown_header(["goal", "met", "measured"])]
        lines += [markdown_row([g.name, "yes" if g.met else "no", g.detail]) for g in report.goals]
    for section in (deltas_markdown(report.content_deltas), categories_markdown(report.categories, report.content_deltas),
                    free_chat_markdown(report.free_chat) if report.free_chat is not None else []):
        if section:
            lines += ["", *section]
    if report.perplexity:
        p = report.perplexity
        lines += ["", "## Empty-memory check", "",
                  (f"Perplexity on held-out generic text ({p['source']}, {p['tokens']} tokens): bare backbone "
                  f"{p['bare']:.3f}, with the adapter writing its own state from empty {p['adapter']:.3f} "
                  f"(ratio {p['ratio']:.4f}; goal within 2%: {'met' if abs(p['ratio'] - 1) <= 0.02 else 'missed'}).")]
    return "\n".join(lines) + "\n"


def bar_chart(report: EvalReport, path: str | Path) -> Path:
    """Token F1 (top) and answer recall (bottom) per question kind and overall, one bar per
    condition; a third panel per source category when the probes have categories (LoCoMo)."""
    kinds = _kinds(report)
    groups = ["overall", *kinds]
    categories = sorted({(c.category, c.name) for c in report.categories})
    panels = 3 if categories else 2
    fig, axes = pyplot().subplots(panels, 1, figsize=(max(7, 1.6 * len(groups) + 2), 3.4 * panels), dpi=120, squeeze=False)
    width = 0.8 / max(len(report.summaries), 1)
    for row, metric in enumerate(("f1", "recall")):
        ax = axes[row][0]
        for i, s in enumerate(report.summaries):
            overall = getattr(s, metric) or 0.0
            by_kind = s.f1_by_kind if metric == "f1" else s.recall_by_kind
            values = [100 * overall, *[100 * by_kind.get(k, 0.0) for k in kinds]]
            ax.bar([g + i * width for g in range(len(groups))], values, width, label=s.label)
        ax.set_xticks([g + width * (len(report.summaries) - 1) / 2 for g in range(len(groups))], groups)
        ax.set_ylabel("token F1 (%)" if metric == "f1" else "answer recall (%)")
        ax.grid(axis="y", alpha=0.3)
    if categories:
        ax = axes[2][0]
        for i, s in enumerate(report.summaries):
            by = {c.category: c for c in report.categories if c.condition == s.condition}
            f1 = [100 * (by[c].f1 or 0.0) if c in by else 0.0 for c, _ in categories]
            recall = [100 * (by[c].recall or 0.0) if c in by else 0.0 for c, _ in categories]
            xs = [g + i * width for g in range(len(categories))]
            ax.bar(xs, recall, width, color=f"C{i}", alpha=0.35)  # recall behind, pale
            ax.bar(xs, f1, width * 0.6, color=f"C{i}")
        ax.set_xticks([g + width * (len(report.summaries) - 1) / 2 for g in range(len(categories))],
                      [name for _, name in categories])
        ax.set_ylabel("F1 (dark) / recall (pale), %")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_title(f"δ-mem evaluation: {report.dataset}")
    axes[0][0].legend(fontsize=7, ncols=2)
    return save_figure(fig, path)


def write_report(report: EvalReport, out: str | Path, name: str) -> list[Path]:
    """``<name>.json``, ``<name>.md`` and ``<name>.png`` in ``out``."""
    json_path, md_path = write_json_and_markdown(out, name, report.model_dump_json(indent=1) + "\n", markdown(report))
    return [json_path, md_path, bar_chart(report, Path(out) / f"{name}.png")]
