"""`MemoryService`: the MCP tools' work, as plain synchronous methods over a `HybridMemory`.

Kept apart from the MCP wiring (app.py) so that what a tool does can be read, and tested, without
a protocol in between. Every method validates before it writes, and leaves the committed memory
as it was when it fails (HybridMemory rolls a failed turn back).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from deltamem_agents.errors import UserError
from deltamem_agents.mcp_server.schemas import (
    AddMemoryResult,
    DeleteMemoryResult,
    ForgetResult,
    ForgetScope,
    LoggedMessage,
    MemoryHistoryResult,
    MemoryHit,
    MemoryListResult,
    MemoryMessage,
    MemoryMetadata,
    MemorySearchResult,
    RecallResult,
    RememberResult,
    RememberRole,
    RouteInfo,
    SessionList,
    SessionLog,
    SessionStats,
    SessionSummary,
    SkippedSnippet,
    Snippet,
    StateSize,
    Vote,
)
from deltamem_agents.memory.hybrid import snippet_note
from deltamem_agents.memory.textlog import TextLog, TextLogError, content_hash
from deltamem_agents.memory.verbs import MemoryItem, MemoryNotFoundError, ResetReport
from deltamem_agents.session.session import SessionError
from deltamem_agents.store.base import SessionNotFoundError
from deltamem_agents.store.records import ChatMessage, SessionKey, validate_id

if TYPE_CHECKING:
    from deltamem_agents.memory.hybrid import HybridMemory
    from deltamem_agents.memory.routing import RouteDecision
    from deltamem_agents.store.records import SessionMetadata

logger = logging.getLogger(__name__)

LOG_URI = "deltamem://sessions/{user_id}/{session_id}/log"
#: The library's hint in an unknown-memory error names a Python call; a tool caller gets the tools.
_LIBRARY_HINT = "get_all(user_id=...) lists the user's memories"
_TOOL_HINT = "`list_memories` or `search_memories` shows this user's memory ids"


class ConfirmationRequiredError(UserError):
    """A destructive tool was called without ``confirm=true``; nothing was changed."""


@contextmanager
def _tool_hints() -> Iterator[None]:
    """Re-word the library's unknown-memory hint for a tool caller (the same error class)."""
    try:
        yield
    except MemoryNotFoundError as exc:
        raise MemoryNotFoundError(str(exc).replace(_LIBRARY_HINT, _TOOL_HINT)) from exc


def log_uri(user_id: str, session_id: str) -> str:
    return LOG_URI.format(user_id=user_id, session_id=session_id)


def route_info(decision: RouteDecision) -> RouteInfo:
    return RouteInfo(
        route=decision.route,
        retrieval_wanted=decision.retrieval_wanted,
        reason=decision.reason,
        mode=decision.mode,
        votes=[Vote(policy=v.policy, wants_retrieval=v.wants_retrieval, score=v.score, reason=v.reason) for v in decision.votes],
        retrieved_ids=list(decision.retrieved_ids),
        skipped=[SkippedSnippet(id=s.id, why=s.why, distance=s.distance) for s in decision.skipped],
        tokens_used=decision.tokens_used,
        token_budget=decision.token_budget,
    )


def snippets_of(decision: RouteDecision | None) -> list[Snippet]:
    if decision is None:
        return []
    return [
        Snippet(id=h.id, text=h.text, distance=h.distance, role=h.metadata.get("role"), turn=h.metadata.get("turn"))
        for h in decision.snippets
    ]


class MemoryService:
    """The memory operations the MCP server exposes, over one `HybridMemory`.

    ``max_new_tokens``: the default reply length of `recall` (a caller may ask for less or more,
    up to ``max_new_tokens_limit``)."""

    def __init__(self, hybrid: HybridMemory, *, max_new_tokens: int = 128, max_new_tokens_limit: int = 1024) -> None:
        self.hybrid = hybrid
        self.runtime = hybrid.runtime
        self.store = hybrid.runtime.store
        self.max_new_tokens = max_new_tokens
        self.max_new_tokens_limit = max_new_tokens_limit

    # -- helpers -------------------------------------------------------------------------------------
    def key(self, user_id: str, session_id: str) -> SessionKey:
        return SessionKey(user_id=user_id, session_id=session_id)

    def require(self, user_id: str, session_id: str) -> SessionMetadata:
        """The session's metadata, or a clear error naming what exists."""
        key = self.key(user_id, session_id)
        head = self.store.head(key)
        if head is None:
            known = [m.key.session_id for m in self.store.list(user_id)]
            listing = f"this user's sessions: {', '.join(known[:20])}" if known else f"user {user_id!r} has no sessions"
            raise SessionNotFoundError(
                f"no session {key} ({listing}); `remember` something to start one, or see `list_sessions`"
            )
        return head

    # -- tools ---------------------------------------------------------------------------------------
    def remember(self, text: str, *, user_id: str, session_id: str, role: RememberRole = "user") -> RememberResult:
        """Write ``text`` into the session's state and the text log (the session is created if new)."""
        if not text.strip():
            raise SessionError("the text is empty: there is nothing to remember")
        key = self.key(user_id, session_id)
        created = not self.store.exists(key)
        tokens = self.hybrid.ingest([ChatMessage(role=role, content=text)], session_id=session_id, user_id=user_id)
        ids: list[str] = []
        if self.hybrid.textlog is not None and role != "system":
            digest = content_hash(user_id, session_id, role, text)
            ids = self.hybrid.textlog.ids_for_hashes([digest], user_id=user_id, session_id=session_id)
        head = self.require(user_id, session_id)
        return RememberResult(
            user_id=user_id, session_id=session_id, role=role, created_session=created, tokens_written=tokens,
            log_entry_ids=ids, turn_count=head.turn_count, message_count=head.message_count,
        )

    def recall(
        self, query: str, *, user_id: str, session_id: str, write: bool = False, max_new_tokens: int | None = None
    ) -> RecallResult:
        """Route ``query`` and answer it with the state-informed model.

        ``write=False`` (a probe) changes nothing: the router's decision is computed as
        `HybridMemory.explain` does, and the answer is decoded with the session's ``write=False``
        option (the snippets, the question and the answer are not written, logged or saved).
        ``write=True`` is a normal `HybridMemory.chat` turn: saved and logged."""
        if not query.strip():
            raise SessionError("the query is empty")
        tokens = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        if not 1 <= tokens <= self.max_new_tokens_limit:
            raise SessionError(f"max_new_tokens must be between 1 and {self.max_new_tokens_limit}, got {tokens}")
        self.require(user_id, session_id)
        if write:
            answer = self.hybrid.chat(query, session_id=session_id, user_id=user_id, max_new_tokens=tokens)
            return RecallResult(
                user_id=user_id, session_id=session_id, query=query, reply=answer.text, finish_reason=answer.finish_reason,
                decision=route_info(answer.decision) if answer.decision else None, state_confidence=answer.state_confidence,
                snippets=snippets_of(answer.decision), wrote=True, turn_count=answer.turn,
                prompt_tokens=answer.usage.prompt_tokens, completion_tokens=answer.usage.completion_tokens,
            )
        key = self.key(user_id, session_id)
        with self.store.lock(key):
            decision, confidence = None, None
            if self.hybrid.textlog is not None:
                inp = self.hybrid.router_input(query, session_id=session_id, user_id=user_id)
                decision, confidence = self.hybrid.router.decide(inp), inp.state_confidence
            session = self.runtime.session(session_id, user_id=user_id)
            try:
                if decision is None and self.hybrid.config.measure_state_confidence:
                    confidence = session.state_confidence(query)
                question = ChatMessage(role="user", content=query)
                note = snippet_note(decision)
                reply = session.reply([note, question] if note else [question], write=False, max_new_tokens=tokens)
            except BaseException:
                self.runtime.close(session_id, user_id=user_id)  # reopened from the store next time
                raise
            head = self.require(user_id, session_id)
        return RecallResult(
            user_id=user_id, session_id=session_id, query=query, reply=reply.text, finish_reason=reply.finish_reason,
            decision=route_info(decision) if decision else None, state_confidence=confidence,
            snippets=snippets_of(decision), wrote=False, turn_count=head.turn_count,
            prompt_tokens=reply.stats.prefill_tokens, completion_tokens=reply.stats.decode_tokens,
        )

    def forget(
        self, scope: ForgetScope, *, user_id: str, session_id: str | None = None, entry_ids: list[str] | None = None
    ) -> ForgetResult:
        """Forget text-log entries (their messages leave the session and its state is rebuilt),
        a whole session, or every session of a user. Everything is checked before anything goes."""
        validate_id("user_id", user_id)
        if scope == "entries":
            if session_id is None or not entry_ids:
                raise SessionError("scope 'entries' needs session_id and entry_ids (the ids remember and recall return)")
            self.require(user_id, session_id)
            if self.hybrid.textlog is None:
                raise TextLogError("this server has no text log (state only): forget a whole session instead")
            report = self.hybrid.forget(session_id=session_id, user_id=user_id, ids=list(entry_ids), progress=False)
            return ForgetResult(
                scope=scope, user_id=user_id, session_id=session_id, sessions_deleted=0,
                messages_removed=report.messages_removed or 0, log_entries_removed=report.log_entries_removed,
                state_rebuilt=True,
                note=(
                    f"forgot {report.messages_removed} message(s) and {report.log_entries_removed} log entries; the "
                    "δ-mem state cannot unlearn, so it was rebuilt by replaying the messages that remain"
                ),
            )
        if entry_ids:
            raise SessionError(f"entry_ids are only for scope 'entries', not {scope!r}")
        if scope == "session":
            if session_id is None:
                raise SessionError("scope 'session' needs session_id")
            head = self.require(user_id, session_id)
            report = self.hybrid.forget(session_id=session_id, user_id=user_id)
            return ForgetResult(
                scope=scope, user_id=user_id, session_id=session_id, sessions_deleted=1,
                messages_removed=head.message_count, log_entries_removed=report.log_entries_removed, state_rebuilt=False,
                note=f"deleted session {user_id}/{session_id}: its state, its {head.message_count} message(s) and its log entries",
            )
        if session_id is not None:
            raise SessionError("scope 'user' forgets every session of the user: leave session_id out")
        sessions = self.store.list(user_id)
        log_entries = self.hybrid.textlog.count(user_id=user_id) if self.hybrid.textlog is not None else 0
        if not sessions and not log_entries:
            raise SessionNotFoundError(f"user {user_id!r} has no sessions and no log entries: nothing to forget")
        messages = 0
        for meta in sessions:
            self.hybrid.forget(session_id=meta.key.session_id, user_id=user_id)
            messages += meta.message_count
        if self.hybrid.textlog is not None:  # entries of sessions that were never stored, too
            self.hybrid.textlog.delete_user(user_id=user_id)
        return ForgetResult(
            scope=scope, user_id=user_id, session_id=None, sessions_deleted=len(sessions), messages_removed=messages,
            log_entries_removed=log_entries, state_rebuilt=False,
            note=f"deleted all {len(sessions)} session(s) of user {user_id!r} and their {log_entries} log entries",
        )

    # -- the memory verbs (HybridMemory's add, get, get_all, search, update, delete, history, reset) --
    def _require_log(self) -> TextLog:
        if self.hybrid.textlog is None:
            raise TextLogError("this server has no text log (state only): the memory verbs need one; start it without --state-only")
        return self.hybrid.textlog

    def add_memory(
        self, *, user_id: str, session_id: str, text: str | None = None, messages: list[MemoryMessage] | None = None,
        metadata: MemoryMetadata | None = None,
    ) -> AddMemoryResult:
        """`HybridMemory.add`: one user text or several messages into the session (created if new),
        answered with the memory ids that the other verbs take."""
        if (text is None) == (messages is None):
            raise SessionError("give exactly one of `text` (one user message) and `messages`")
        new = [ChatMessage(role="user", content=text or "")] if messages is None else [
            ChatMessage(role=m.role, content=m.content) for m in messages
        ]
        if not new or any(not m.content.strip() for m in new):
            raise SessionError("a message is empty: there is nothing to remember")
        self._require_log()
        key = self.key(user_id, session_id)
        created = not self.store.exists(key)
        ids = self.hybrid.add(new, session_id=session_id, user_id=user_id, metadata=metadata, call="MCP add_memory")
        return AddMemoryResult(
            user_id=user_id, session_id=session_id, created_session=created, ids=ids,
            memories=[self.hybrid.get(i, user_id=user_id) for i in ids],
        )

    def get_memory(self, memory_id: str, *, user_id: str) -> MemoryItem:
        self._require_log()
        with _tool_hints():
            return self.hybrid.get(memory_id, user_id=user_id)

    def list_memories(
        self, *, user_id: str, session_id: str | None = None, since: datetime | None = None, until: datetime | None = None,
        metadata: dict[str, Any] | None = None, limit: int = 100,
    ) -> MemoryListResult:
        """`HybridMemory.get_all`; one entry past ``limit`` is read to say whether more match."""
        validate_id("user_id", user_id)
        if session_id is not None:
            validate_id("session_id", session_id)
        self._require_log()
        items = self.hybrid.get_all(user_id=user_id, session_id=session_id, since=since, until=until, metadata=metadata,
                                    limit=limit + 1)
        return MemoryListResult(user_id=user_id, count=min(len(items), limit), memories=items[:limit],
                                truncated=len(items) > limit)

    def search_memories(self, query: str, *, user_id: str, session_id: str | None = None, k: int = 4) -> MemorySearchResult:
        if not query.strip():
            raise SessionError("the query is empty")
        validate_id("user_id", user_id)
        if session_id is not None:
            validate_id("session_id", session_id)
        self._require_log()
        hits = self.hybrid.search(query, user_id=user_id, session_id=session_id, k=k)
        return MemorySearchResult(user_id=user_id, query=query, hits=[
            MemoryHit(id=h.id, memory_id=h.metadata.get("memory_id") or h.id.rsplit("-", 1)[0], text=h.text,
                      distance=h.distance, session_id=h.metadata["session_id"], role=h.metadata.get("role"),
                      turn=h.metadata.get("turn"))
            for h in hits
        ])

    def update_memory(self, memory_id: str, text: str, *, user_id: str) -> MemoryItem:
        """`HybridMemory.update`: the entry keeps its id; the session's state is re-derived by replay."""
        self._require_log()
        with _tool_hints():
            return self.hybrid.update(memory_id, text, user_id=user_id, call="MCP update_memory")

    def delete_memory(self, memory_id: str, *, user_id: str) -> DeleteMemoryResult:
        """`HybridMemory.delete`: the entry's message leaves its session, whose state is rebuilt."""
        self._require_log()
        with _tool_hints():
            item = self.hybrid.get(memory_id, user_id=user_id)
            report = self.hybrid.delete(item.id, user_id=user_id, call="MCP delete_memory")
        return DeleteMemoryResult(id=item.id, user_id=user_id, session_id=item.session_id, deleted=True,
                                  log_entries_removed=report.log_entries_removed,
                                  messages_removed=report.messages_removed, state_rebuilt=report.state_rebuilt)

    def memory_history(self, memory_id: str, *, user_id: str) -> MemoryHistoryResult:
        self._require_log()
        with _tool_hints():
            events = self.hybrid.history(memory_id, user_id=user_id)
            entry = events[0].memory_id if events else self.hybrid.get(memory_id, user_id=user_id).id
        return MemoryHistoryResult(id=entry, events=events)

    def reset_memories(self, *, user_id: str, confirm: bool = False) -> ResetReport:
        """`HybridMemory.reset`, only with ``confirm``: without it the refusal says what would go."""
        validate_id("user_id", user_id)
        log = self._require_log()
        if not confirm:
            sessions, entries = len(self.store.list(user_id)), log.count(user_id=user_id)
            raise ConfirmationRequiredError(
                f"reset_memories deletes all of user {user_id!r}'s memory ({sessions} session(s), {entries} log "
                "entries and their history) and cannot be undone; nothing was deleted: call it again with confirm=true"
            )
        return self.hybrid.reset(user_id=user_id)

    def list_sessions(self, user_id: str | None = None) -> SessionList:
        found = self.runtime.sessions(user_id)
        return SessionList(
            sessions=[
                SessionSummary(
                    user_id=m.key.user_id, session_id=m.key.session_id, turns=m.turn_count, messages=m.message_count,
                    tokens_written=m.tokens_written, updated_at=m.updated_at,
                    log_uri=log_uri(m.key.user_id, m.key.session_id),
                )
                for m in found
            ]
        )

    def session_stats(self, *, user_id: str, session_id: str) -> SessionStats:
        self.require(user_id, session_id)
        record = self.store.require(self.key(user_id, session_id))
        meta, state = record.metadata, record.state
        size = None
        if state is not None and len(state):
            tensors = list(state.layers.values())
            size = StateSize(
                layers=len(state), heads=state.num_heads, rank=state.rank, dtype=str(tensors[0].dtype).removeprefix("torch."),
                bytes=sum(t.numel() * t.element_size() for t in tensors),
                norm=sum(v * v for v in state.norms().values()) ** 0.5,
            )
        entries = self.hybrid.textlog.count(user_id=user_id, session_id=session_id) if self.hybrid.textlog else None
        return SessionStats(
            user_id=user_id, session_id=session_id, turns=meta.turn_count, messages=meta.message_count,
            messages_by_role=dict(Counter(m.role for m in record.messages)), tokens_written=meta.tokens_written,
            created_at=meta.created_at, updated_at=meta.updated_at, state=size, log_entries=entries,
            fingerprint=meta.fingerprint.model_dump(), fingerprint_matches=meta.fingerprint == self.runtime.fingerprint,
            log_uri=log_uri(user_id, session_id),
        )

    def session_log(self, *, user_id: str, session_id: str) -> SessionLog:
        validate_id("user_id", user_id)
        validate_id("session_id", session_id)
        self.require(user_id, session_id)
        record = self.store.require(self.key(user_id, session_id))
        messages = [
            LoggedMessage(index=i, **m.model_dump(include={"role", "content", "created_at", "name", "tool_call_id", "tool_calls", "metadata"}))
            for i, m in enumerate(record.messages)
        ]
        return SessionLog(user_id=user_id, session_id=session_id, turns=record.metadata.turn_count, messages=messages)


def describe(hybrid: HybridMemory) -> dict[str, Any]:
    """What the server runs on, for its instructions and the CLI's start-up line."""
    runtime = hybrid.runtime
    return {
        "backbone": runtime.backbone_name,
        "adapter": str(runtime.adapter_path) if runtime.adapter_path else "untrained",
        "textlog": repr(hybrid.textlog) if hybrid.textlog is not None else "off",
        "router": repr(hybrid.router),
    }


__all__ = ["LOG_URI", "ConfirmationRequiredError", "MemoryService", "describe", "log_uri", "route_info", "snippets_of"]
