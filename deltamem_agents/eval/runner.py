"""`run_eval`: every probe of every conversation under every condition, into an `EvalReport`;
with ``config.free_prompts``, the free-chat check on the same conversations' states."""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from statistics import mean
from typing import Any

from deltamem_agents.data.prompts import FREE_PROMPTS
from deltamem_agents.data.records import Conversation
from deltamem_agents.eval.breakdown import category_scores, content_deltas
from deltamem_agents.eval.conditions import Answer, EvalConfig, Evaluator, Prepared
from deltamem_agents.eval.repetition import FreeReply, summarize_free
from deltamem_agents.eval.report import EvalReport, check_goals, summarize
from deltamem_agents.progress import ProgressLike, tracked


def run_eval(
    model: Any,
    tokenizer: Any,
    handle: Any,
    conversations: Sequence[Conversation],
    *,
    dataset: str,
    backbone: str,
    adapter: str | None,
    config: EvalConfig | None = None,
    textlog_dir: str | Path | None = None,
    max_probes: int | None = None,
    perplexity: dict[str, Any] | None = None,
    hardware: dict[str, Any] | None = None,
    progress: ProgressLike = True,
) -> EvalReport:
    """Answer ``conversations``' probes under ``config.conditions``; the text log lives in
    ``textlog_dir`` (a temporary folder by default), on a real embedded Chroma. ``progress``
    reports one unit per answer (see deltamem_agents/progress.py).

    The free-chat check asks ``FREE_PROMPTS[i]`` on conversation ``i mod N`` (each reply twice: with
    that conversation's state and bare), so it costs 2 x ``free_prompts`` long replies in all."""
    from deltamem_agents.memory.textlog import TextLog, TextLogConfig

    config = config or EvalConfig()
    controls = sorted({"state_other", "hybrid_other"} & set(config.conditions))
    if controls and len(conversations) < 2:
        # with one conversation the "other" state would be its own: the control would measure nothing
        raise ValueError(f"the controls {', '.join(controls)} need at least two conversations (another "
                         f"conversation's state), not {len(conversations)}")
    started = time.perf_counter()
    needs_log = bool({"rag", "hybrid", "hybrid_other"} & set(config.conditions))
    with tempfile.TemporaryDirectory(prefix="deltamem-eval-") as tmp:
        textlog = TextLog(TextLogConfig(path=Path(textlog_dir or tmp) / "textlog", collection="deltamem-eval")) if needs_log else None
        evaluator = Evaluator(model, tokenizer, handle, textlog, config=config)
        plan = [(c, [i for i in range(len(c.probes))][: max_probes]) for c in conversations]
        free = _free_plan(config.free_prompts, len(plan))
        total = sum(len(p) for _, p in plan) * len(config.conditions) + 2 * config.free_prompts
        answers: list[Answer] = []
        replies: list[FreeReply] = []
        prepared: list[Prepared] = []
        with tracked(progress, "evaluating", total=total) as bar:
            for number, (conversation, probes) in enumerate(plan):
                bar.set_status(f"writing {conversation.id}")
                ready = evaluator.prepare(conversation)
                prepared.append(ready)
                if number:
                    prepared[number - 1].full = None  # its KV cache is no longer needed
                other = None
                if {"state_other", "hybrid_other"} & set(config.conditions):
                    # a control: the state of another conversation (the previous one; the next for the first)
                    donor = plan[number - 1][0] if number else plan[1 % len(plan)][0]
                    other = prepared[number - 1].state if number else evaluator.prepare_state(donor)
                for index in probes:
                    for condition in config.conditions:
                        bar.set_status(f"{conversation.id} {condition}")
                        answers.append(evaluator.answer(ready, index, condition, other_state=other))
                        bar.advance()
                for prompt in free.get(number, []):
                    for with_state in (True, False):
                        bar.set_status(f"{conversation.id} free chat {'state' if with_state else 'bare'}")
                        replies.append(evaluator.free_reply(ready, prompt, with_state=with_state))
                        bar.advance()
        if textlog is not None:
            textlog.close()
    summaries = {c: summarize(c, [a for a in answers if a.condition == c]) for c in config.conditions}
    free_chat = summarize_free(replies, free_tokens=config.free_tokens) if replies else None
    deltas = content_deltas(answers)
    locomo = any(a.category is not None for a in answers)
    writes = [p.write_ms for p in prepared if p.state is not None]
    return EvalReport(
        dataset=dataset, conversations=len(conversations), probes=sum(len(p) for _, p in plan), backbone=backbone,
        adapter=adapter, config=config, summaries=list(summaries.values()),
        goals=check_goals(summaries, free_chat, deltas, locomo=locomo), content_deltas=deltas,
        categories=category_scores(answers, config.conditions), free_chat=free_chat,
        state_write_ms_per_conversation=round(mean(writes), 1) if writes else None,
        full_history_prefill_ms_per_conversation=round(mean(p.full_ms for p in prepared), 1)
        if prepared and "full_history" in config.conditions else None,
        history_tokens_mean=round(mean(p.history_tokens for p in prepared), 1) if prepared else 0.0,
        perplexity=perplexity, hardware=hardware or {}, command=_command(), wall_time_s=round(time.perf_counter() - started, 1),
        answers=answers,
    )


def _free_plan(prompts: int, conversations: int) -> dict[int, list[str]]:
    """Which free prompts each conversation (by its number) is asked: prompt i on conversation i mod N."""
    plan: dict[int, list[str]] = {}
    for i, prompt in enumerate(FREE_PROMPTS[:prompts]):
        plan.setdefault(i % max(conversations, 1), []).append(prompt)
    return plan


def _command() -> str:
    argv = list(sys.argv)
    if argv and Path(argv[0]).name == "deltamem":
        argv[0] = "deltamem"
    return " ".join(argv)
