"""Aggregating answers into an `EvalReport`: JSON, a Markdown table and a bar chart.

Token F1 / exact match / answer recall are averaged over questions (requests have no gold
span; their replies are scored by rule checks). "memory kinds" are the preference, instruction
and task-state questions the issue's first goal is about.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from statistics import mean
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from deltamem_agents.data.records import MEMORY_KINDS
from deltamem_agents.eval.conditions import LABELS, Answer, EvalConfig
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
    f1_memory_kinds: float | None = Field(None, description="preference + instruction + task questions")
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
    hardware: dict[str, Any]
    command: str
    wall_time_s: float
    answers: list[Answer]


def _avg(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(mean(present), 4) if present else None


def summarize(condition: str, answers: Sequence[Answer]) -> ConditionSummary:
    questions = [a for a in answers if a.f1 is not None]
    kinds = sorted({a.kind for a in questions})
    by_kind = {k: _avg([a.f1 for a in questions if a.kind == k]) or 0.0 for k in kinds}
    memory = [a.f1 for a in questions if a.kind in MEMORY_KINDS]
    rules = [ok for a in answers if a.rules for ok in a.rules]
    return ConditionSummary(
        condition=condition, label=LABELS.get(condition, condition), questions=len(questions),
        f1=_avg([a.f1 for a in questions]), exact=_avg([a.exact for a in questions]), recall=_avg([a.recall for a in questions]),
        f1_by_kind=by_kind, f1_memory_kinds=_avg(memory), rules_followed=_avg([float(r) for r in rules]),
        prompt_tokens=round(mean(a.prompt_tokens for a in answers), 1) if answers else 0.0,
        latency_ms=round(mean(a.latency_ms for a in answers), 1) if answers else 0.0,
    )


def check_goals(summaries: dict[str, ConditionSummary]) -> list[Goal]:
    """The issue's goals on the held-out generated test split, each with its margin."""
    goals = []
    state, window = summaries.get("state"), summaries.get("recent_window")
    if state and window and state.f1_memory_kinds is not None and window.f1_memory_kinds is not None:
        gap = 100 * (state.f1_memory_kinds - window.f1_memory_kinds)
        goals.append(Goal(name="state beats recent window by >= 10 F1 points on preference/instruction/task",
                          met=gap >= 10, detail=f"{gap:+.1f} points ({100 * state.f1_memory_kinds:.1f} vs {100 * window.f1_memory_kinds:.1f})"))
    hybrid, rag, full = summaries.get("hybrid"), summaries.get("rag"), summaries.get("full_history")
    if hybrid and rag and "fact" in hybrid.f1_by_kind and "fact" in rag.f1_by_kind:
        gap = 100 * (hybrid.f1_by_kind["fact"] - rag.f1_by_kind["fact"])
        goals.append(Goal(name="hybrid >= RAG only on facts", met=gap >= 0,
                          detail=f"{gap:+.1f} points ({100 * hybrid.f1_by_kind['fact']:.1f} vs {100 * rag.f1_by_kind['fact']:.1f})"))
    if hybrid and full and hybrid.f1 is not None and full.f1 is not None:
        gap = 100 * (hybrid.f1 - full.f1)
        share = hybrid.prompt_tokens / full.prompt_tokens if full.prompt_tokens else float("inf")
        goals.append(Goal(name="hybrid >= full history overall with <= 25% of its prompt tokens", met=gap >= 0 and share <= 0.25,
                          detail=f"{gap:+.1f} F1 points ({100 * hybrid.f1:.1f} vs {100 * full.f1:.1f}); prompt tokens "
                                 f"{hybrid.prompt_tokens:.0f} vs {full.prompt_tokens:.0f} = {100 * share:.1f}%"))
    # Controls: does the state's *content* matter, or only that a state is there?
    for ours, other, what in (("state", "state_other", "5"), ("hybrid", "hybrid_other", "6")):
        a, b = summaries.get(ours), summaries.get(other)
        if a and b and a.f1 is not None and b.f1 is not None:
            gap = 100 * (a.f1 - b.f1)
            goals.append(Goal(name=f"control: condition {what} beats itself with another conversation's state",
                              met=gap > 0, detail=f"{gap:+.1f} F1 points ({100 * a.f1:.1f} vs {100 * b.f1:.1f}); "
                              "0 means the gain comes from the adapter, not from what the state holds"))
    return goals


def markdown(report: EvalReport) -> str:
    kinds = sorted({k for s in report.summaries for k in s.f1_by_kind})
    head = ["condition", "F1", "EM", "recall", *[f"F1 {k}" for k in kinds], "F1 pref+instr+task", "rules followed",
            "prompt tokens", "latency ms"]
    lines = [
        f"# δ-mem evaluation: {report.dataset}",
        "",
        f"Generated by `{report.command}`; regenerate rather than edit. Backbone `{report.backbone}`, adapter "
        f"`{report.adapter or 'none'}`; {report.conversations} conversations, {report.probes} probes "
        f"(history {report.history_tokens_mean:.0f} tokens on average, window {report.config.window_tokens} tokens). "
        f"Scores are percentages; machine: {report.hardware.get('platform')}, {report.hardware.get('threads')} threads, "
        f"wall time {report.wall_time_s / 60:.1f} min.",
        "",
        *markdown_header(head),
    ]
    for s in report.summaries:
        row = [s.label, percent(s.f1), percent(s.exact), percent(s.recall), *[percent(s.f1_by_kind.get(k)) for k in kinds],
               percent(s.f1_memory_kinds), percent(s.rules_followed), f"{s.prompt_tokens:.0f}", f"{s.latency_ms:.0f}"]
        lines.append(markdown_row(row))
    if report.state_write_ms_per_conversation is not None:
        lines += ["", f"Writing a history into the state took {report.state_write_ms_per_conversation / 1e3:.1f} s per "
                  "conversation on average (once per conversation, not counted in the latencies above)."]
    if report.full_history_prefill_ms_per_conversation is not None:
        lines += ["", f"Prefilling the full history took {report.full_history_prefill_ms_per_conversation / 1e3:.1f} s per "
                  "conversation on average (once; its KV cache is kept between that conversation's questions)."]
    if report.goals:
        lines += ["", "## Goals", "", *markdown_header(["goal", "met", "measured"])]
        lines += [markdown_row([g.name, "yes" if g.met else "no", g.detail]) for g in report.goals]
    if report.perplexity:
        p = report.perplexity
        lines += ["", "## Empty-memory check", "",
                  f"Perplexity on held-out generic text ({p['source']}, {p['tokens']} tokens): bare backbone "
                  f"{p['bare']:.3f}, with the adapter writing its own state from empty {p['adapter']:.3f} "
                  f"(ratio {p['ratio']:.4f}; goal within 2%: {'met' if abs(p['ratio'] - 1) <= 0.02 else 'missed'})."]
    return "\n".join(lines) + "\n"


def bar_chart(report: EvalReport, path: str | Path) -> Path:
    """F1 per question kind (and overall), one bar per condition."""
    kinds = sorted({k for s in report.summaries for k in s.f1_by_kind})
    groups = ["overall", *kinds]
    fig, ax = pyplot().subplots(figsize=(max(7, 1.6 * len(groups) + 2), 4.2), dpi=120)
    width = 0.8 / max(len(report.summaries), 1)
    for i, s in enumerate(report.summaries):
        values = [100 * (s.f1 or 0.0), *[100 * s.f1_by_kind.get(k, 0.0) for k in kinds]]
        ax.bar([g + i * width for g in range(len(groups))], values, width, label=s.label)
    ax.set_xticks([g + width * (len(report.summaries) - 1) / 2 for g in range(len(groups))], groups)
    ax.set_ylabel("token F1 (%)")
    ax.set_title(f"δ-mem evaluation: {report.dataset}")
    ax.legend(fontsize=7, ncols=2)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def write_report(report: EvalReport, out: str | Path, name: str) -> list[Path]:
    """``<name>.json``, ``<name>.md`` and ``<name>.png`` in ``out``."""
    json_path, md_path = write_json_and_markdown(out, name, report.model_dump_json(indent=1) + "\n", markdown(report))
    return [json_path, md_path, bar_chart(report, Path(out) / f"{name}.png")]
