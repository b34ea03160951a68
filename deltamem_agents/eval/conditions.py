"""The six ways of answering a probe that `deltamem eval` puts side by side.

All conditions use the same backbone (with the adapter attached: an empty state reads zero,
so conditions without a state are exactly the bare backbone) and the same `MemorySession`
code path as applications. Probes never write (``reply(write=False)``), and every probe gets a
fresh session except under ``full_history``, so no answer leaks into another. Latencies are
per answer; the once-per-conversation work (writing the state, prefilling the full history) is
reported separately as ``setup_ms``.

1. ``no_memory``: the question alone.
2. ``recent_window``: the last ``window_tokens`` of the history, then the question.
3. ``full_history``: the whole history (up to ``full_history_limit`` tokens), then the question.
   Its KV cache is built once per conversation and kept between probes, as a chat app keeps it.
4. ``rag``: the recent window, the top-k messages of the Chroma text log as a system note, the question.
5. ``state``: the recent window, the question, and the δ-mem state written from the history.
6. ``hybrid``: the state, the recent window, and the notes the `MemoryRouter` chose from the
   text log, placed as `HybridMemory` places them; as a probe, so nothing is written or logged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from deltamem_agents.core.state import DeltaMemState
from deltamem_agents.data.prompts import FREE_PROMPTS, probe_prompt
from deltamem_agents.data.records import Conversation
from deltamem_agents.eval.metrics import (
    answer_recall,
    check_rule,
    exact_match,
    token_f1,
)
from deltamem_agents.eval.repetition import FreeReply, repeated_ngram_share
from deltamem_agents.memory.notes import snippet_text
from deltamem_agents.memory.routing import MemoryRouter, RouterInput, router_from_spec
from deltamem_agents.memory.textlog import TextLog
from deltamem_agents.session.session import (
    GenerationOptions,
    MemorySession,
    SessionConfig,
)
from deltamem_agents.store.records import ChatMessage

ConditionName = Literal["no_memory", "recent_window", "full_history", "rag", "state", "hybrid", "state_other", "hybrid_other"]
CONDITIONS: tuple[ConditionName, ...] = ("no_memory", "recent_window", "full_history", "rag", "state", "hybrid")
LABELS: dict[str, str] = {
    "no_memory": "1. no memory",
    "recent_window": "2. recent window",
    "full_history": "3. full history",
    "rag": "4. RAG only",
    "state": "5. δ-mem state",
    "hybrid": "6. hybrid",
    "state_other": "control: 5 with another conversation's state",
    "hybrid_other": "control: 6 with another conversation's state",
}
EVAL_USER = "eval"


class EvalConfig(BaseModel):
    """How the conditions are laid out; the same for every condition where it applies."""

    model_config = ConfigDict(extra="forbid")

    conditions: tuple[ConditionName, ...] = CONDITIONS
    window_tokens: int = Field(64, ge=1, description="recent history tokens kept in context")
    rag_k: int = Field(3, ge=1, description="log messages placed by RAG")
    router: str = Field(
        "retrieval=0.75", description="router policies of the hybrid (see router_from_spec): place the log messages "
        "within cosine distance 0.75 of the question, if any",
    )
    router_k: int = Field(3, ge=1, description="most log messages the hybrid's router places")
    snippet_budget: int = Field(160, ge=1, description="most note tokens the hybrid's router places")
    max_new_tokens: int = Field(12, ge=1, description="answers to questions are a few words")
    request_max_new_tokens: int = Field(24, ge=1, description="for requests, whose replies are rule-checked")
    full_history_limit: int = Field(7424, ge=16, description="most history tokens the full-history condition keeps")
    ingest_window: int = Field(2048, ge=64, description="attention window while writing a history into the state")
    free_prompts: int = Field(0, ge=0, le=len(FREE_PROMPTS), description="open prompts of the free-chat check (0: off)")
    free_tokens: int = Field(256, ge=1, description="most new tokens of a free-chat reply")
    free_write: bool = Field(True, description="free-chat replies with the state write as they are decoded, as an "
                             "application's replies do (the bare ones never write: an empty state then reads zero)")


class Answer(BaseModel):
    """One probe answered under one condition, scored."""

    model_config = ConfigDict(extra="forbid")

    condition: str
    conversation: str
    probe: int
    kind: str
    category: str | None = None
    question: str
    gold: str
    prediction: str
    f1: float | None = None
    exact: float | None = None
    recall: float | None = None
    rules: list[bool] | None = None
    prompt_tokens: int
    latency_ms: float
    route: str | None = None


@dataclass
class Prepared:
    """What one conversation gives every condition: messages, sizes, the state, the log scope."""

    conversation: Conversation
    messages: list[ChatMessage]
    history_tokens: int
    state: DeltaMemState | None
    write_ms: float
    log_session: str
    full: MemorySession | None = None  # the full-history session, its KV cache kept between probes
    full_tokens: int = 0
    full_ms: float = 0.0


class Evaluator:
    """Answers probes under each condition with one model, adapter and text log."""

    def __init__(self, model: Any, tokenizer: Any, handle: Any, textlog: TextLog | None, *,
                 config: EvalConfig | None = None, router: MemoryRouter | None = None) -> None:
        self.model, self.tokenizer, self.handle = model, tokenizer, handle
        self.textlog = textlog
        self.config = config or EvalConfig()
        self.router = router or router_from_spec(self.config.router, k=self.config.router_k,
                                                 token_budget=self.config.snippet_budget)
        needs_log = {"rag", "hybrid", "hybrid_other"} & set(self.config.conditions)
        if needs_log and textlog is None:
            raise ValueError(f"conditions {sorted(needs_log)} need a text log")

    # -- per conversation ----------------------------------------------------------------------
    def prepare(self, conversation: Conversation) -> Prepared:
        """Write the history into a state (as a session ingests it) and into the text log."""
        messages = [ChatMessage(role=t.role, content=t.content) for t in conversation.turns]
        probe_session = MemorySession(self.model, self.tokenizer, self.handle)
        history_tokens = len(probe_session.encoder.encode_delta("", conversation.messages(), 0, next_segment=0)[0].ids)
        state, write_ms = None, 0.0
        if {"state", "hybrid", "state_other", "hybrid_other"} & set(self.config.conditions) or self.config.free_prompts:
            started = time.perf_counter()
            writer = MemorySession(self.model, self.tokenizer, self.handle,
                                   config=SessionConfig(context_window=self.config.ingest_window, prefill_chunk=512))
            writer.ingest(messages)
            state = writer.state
            write_ms = (time.perf_counter() - started) * 1e3
        log_session = conversation.id
        prepared = Prepared(conversation, messages, history_tokens, state, write_ms, log_session)
        if "full_history" in self.config.conditions:
            started = time.perf_counter()
            keep = min(self.config.full_history_limit, history_tokens)
            window = keep + 768  # room for the question and the answer: never rebuilt mid-answer
            session = MemorySession(self.model, self.tokenizer, self.handle,
                                    config=SessionConfig(context_window=window, rebuild_keep=(keep + 0.5) / window))
            kept = messages
            if history_tokens > keep:  # longer than the model's context: the most recent messages that fit
                count, size = 0, 0
                for message in reversed(messages):
                    size += len(self.tokenizer(message.content, add_special_tokens=False)["input_ids"]) + 6
                    if size > keep:
                        break
                    count += 1
                kept = messages[len(messages) - max(count, 1) :]
            stats = session.ingest(kept, write=False)
            keep = stats.prefill_tokens
            prepared.full, prepared.full_tokens = session, keep
            prepared.full_ms = (time.perf_counter() - started) * 1e3
        if self.textlog is not None and {"rag", "hybrid", "hybrid_other"} & set(self.config.conditions):
            for index, message in enumerate(messages):
                self.textlog.add_message(message, user_id=EVAL_USER, session_id=log_session, turn=index // 2)
        return prepared

    def prepare_state(self, conversation: Conversation) -> DeltaMemState | None:
        """Only the state of a conversation (for the another-conversation control)."""
        writer = MemorySession(self.model, self.tokenizer, self.handle,
                               config=SessionConfig(context_window=self.config.ingest_window, prefill_chunk=512))
        writer.ingest([ChatMessage(role=t.role, content=t.content) for t in conversation.turns])
        return writer.state

    # -- per probe ----------------------------------------------------------------------------------
    def _session(self, prepared: Prepared, *, keep: int | None, state: DeltaMemState | None, max_new_tokens: int) -> tuple[MemorySession, int]:
        """A fresh session whose context will be the last ``keep`` history tokens (None: no history)."""
        generation = GenerationOptions(max_new_tokens=max_new_tokens)
        if keep is None:
            return MemorySession(self.model, self.tokenizer, self.handle, config=SessionConfig(generation=generation)), 0
        keep = min(keep, prepared.history_tokens)
        window = max(keep + 768, 1024)  # room for notes, question and answer: never rebuilt mid-answer
        config = SessionConfig(context_window=window, rebuild_keep=(keep + 0.5) / window, generation=generation)
        session = MemorySession(self.model, self.tokenizer, self.handle, config=config, state=state, messages=prepared.messages)
        return session, keep

    def _note(self, session: MemorySession, texts: list[str]) -> int:
        """Place retrieved messages as HybridMemory does: a system note, never written."""
        stats = session.ingest(ChatMessage(role="system", content=snippet_text(texts)), write=False)
        return stats.prefill_tokens

    def answer(self, prepared: Prepared, index: int, condition: ConditionName, *, other_state: DeltaMemState | None = None) -> Answer:
        probe = prepared.conversation.probes[index]
        prompt = probe_prompt(probe)
        cfg = self.config
        max_new = cfg.request_max_new_tokens if probe.kind == "request" else cfg.max_new_tokens
        started = time.perf_counter()
        route = None
        state = {"state": prepared.state, "hybrid": prepared.state, "state_other": other_state,
                 "hybrid_other": other_state}.get(condition)
        if condition == "no_memory":
            session, context = self._session(prepared, keep=None, state=None, max_new_tokens=max_new)
        elif condition == "full_history":
            assert prepared.full is not None
            session, context = prepared.full, prepared.full_tokens
        else:
            session, context = self._session(prepared, keep=cfg.window_tokens, state=state, max_new_tokens=max_new)
        if condition == "rag":
            assert self.textlog is not None
            hits = self.textlog.search(prompt, user_id=EVAL_USER, session_id=prepared.log_session, k=cfg.rag_k)
            if hits:
                context += self._note(session, [h.text for h in hits])
            route = "retrieve"
        elif condition in ("hybrid", "hybrid_other"):
            assert self.textlog is not None
            hits = self.textlog.search(prompt, user_id=EVAL_USER, session_id=prepared.log_session, k=2 * cfg.router_k)
            uses_state = any(getattr(p, "name", "") == "state" for p in self.router.policies)
            confidence = session.state_confidence(prompt) if uses_state else None
            decision = self.router.route(RouterInput(query=prompt, hits=hits, state_confidence=confidence))
            if decision.snippets:
                context += self._note(session, [h.text for h in decision.snippets])
            route = decision.route
        reply = session.reply(prompt, write=False, max_new_tokens=max_new)
        latency = (time.perf_counter() - started) * 1e3
        context += reply.stats.prefill_tokens
        scored: dict[str, Any] = {}
        if probe.kind == "request":
            scored["rules"] = [check_rule(reply.text, rule) for rule in probe.rules]
        else:
            scored = {"f1": token_f1(reply.text, probe.answer), "exact": exact_match(reply.text, probe.answer),
                      "recall": answer_recall(reply.text, probe.answer)}
        return Answer(condition=condition, conversation=prepared.conversation.id, probe=index, kind=probe.kind,
                      category=probe.category, question=probe.question, gold=probe.answer, prediction=reply.text,
                      prompt_tokens=context, latency_ms=round(latency, 1), route=route, **scored)

    # -- free chat ----------------------------------------------------------------------------------
    def free_reply(self, prepared: Prepared, prompt: str, *, with_state: bool) -> FreeReply:
        """A long greedy reply to an open prompt on the recent window, with the conversation's state
        or with an empty one (exactly the bare backbone), and its repeated-4-gram share."""
        cfg = self.config
        session, _ = self._session(prepared, keep=cfg.window_tokens, state=prepared.state if with_state else None,
                                   max_new_tokens=cfg.free_tokens)
        reply = session.reply(prompt, write=with_state and cfg.free_write, max_new_tokens=cfg.free_tokens)
        ids = list(self.tokenizer(reply.text, add_special_tokens=False)["input_ids"])
        return FreeReply(conversation=prepared.conversation.id, prompt=prompt, memory="adapter" if with_state else "bare",
                         reply=reply.text, tokens=len(ids), repeated_share=round(repeated_ngram_share(ids, 4), 4),
                         finish_reason=reply.finish_reason)
