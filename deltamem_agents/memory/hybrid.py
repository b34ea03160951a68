"""`HybridMemory`: δ-mem working memory next to a verbatim text log, with a router between.

After each turn the turn is written twice: into the session's OSAM state (by the session
itself) and into the text log. Before each reply the router looks at the question, the best
log hits and how strongly the state answers the question, and decides whether snippets from
the log go into the context. Snippets enter the context as a system note fed with writing off:
they are already remembered, so they must not be written into the state a second time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from deltamem_agents.memory.router import MemoryRouter, RouteDecision, RouterInput
from deltamem_agents.memory.textlog import DOCUMENT_ROLE, TextLog, TextLogError, content_hash
from deltamem_agents.session.records import ChatMessage, SessionKey
from deltamem_agents.session.session import Reply

if TYPE_CHECKING:
    from deltamem_agents.session.runtime import DeltaMemRuntime

SNIPPET_HEADER = "Notes retrieved from earlier in this conversation (verbatim):"


class HybridReply(BaseModel):
    """A reply with the routing decision that shaped its context."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    text: str
    reply: Reply
    decision: RouteDecision
    state_confidence: float | None = None


class HybridConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    search_k: int = Field(8, ge=1, description="log hits the router chooses from")
    measure_state_confidence: bool = Field(
        True, description="probe the state with the question (one extra short forward) for the router"
    )


class HybridMemory:
    """The recommended architecture: a `DeltaMemRuntime` session + a `TextLog` + a `MemoryRouter`."""

    def __init__(
        self,
        runtime: DeltaMemRuntime,
        textlog: TextLog | None = None,
        router: MemoryRouter | None = None,
        *,
        config: HybridConfig | None = None,
    ) -> None:
        self.runtime = runtime
        self.textlog = textlog or TextLog()
        self.router = router or MemoryRouter()
        self.config = config or HybridConfig()

    def reply(self, text: str, *, session_id: str, user_id: str = "default", **generation: Any) -> HybridReply:
        """Route, answer, then log the turn in both memories and commit the session."""
        session = self.runtime.session(session_id, user_id=user_id)
        hits = self.textlog.search(text, user_id=user_id, session_id=session_id, k=self.config.search_k)
        confidence = session.state_confidence(text) if self.config.measure_state_confidence else None
        decision = self.router.route(RouterInput(query=text, hits=hits, state_confidence=confidence))
        if decision.snippets:
            notes = "\n".join(f"- {hit.text}" for hit in decision.snippets)
            session.ingest(ChatMessage(role="system", content=f"{SNIPPET_HEADER}\n{notes}", metadata={"retrieved": decision.retrieved_ids}), write=False)
        turn = sum(m.role == "user" for m in session.messages)
        reply = session.reply(text, **generation)
        for message in session.messages[-2:]:
            self.textlog.add_message(message, user_id=user_id, session_id=session_id, turn=turn)
        self.runtime.save(session)
        return HybridReply(text=reply.text, reply=reply, decision=decision, state_confidence=confidence)

    def ingest_document(self, text: str, *, session_id: str, source: str, user_id: str = "default") -> list[str]:
        """Write a document into the state (as a user message) and, chunked, into the log."""
        session = self.runtime.session(session_id, user_id=user_id)
        session.ingest(ChatMessage(role="user", content=text, metadata={"source": source, "kind": "document"}))
        ids = self.textlog.add_document(text, user_id=user_id, session_id=session_id, source=source)
        self.runtime.save(session)
        return ids

    def forget(
        self, *, session_id: str, user_id: str = "default", ids: list[str] | None = None, progress: bool = True
    ) -> ForgetReport:
        """Forget log entries (``ids``; a chunk forgets its whole message) or, with no ids, the
        whole session. The OSAM state cannot unlearn, so the session's state is rebuilt by
        replaying the remaining messages into a fresh state (a progress bar shows it)."""
        if ids is None:
            removed = self.textlog.delete_session(user_id=user_id, session_id=session_id)
            self.runtime.delete(session_id, user_id=user_id)
            return ForgetReport(log_entries_removed=removed, messages_removed=None, state_rebuilt=False)
        hits = self.textlog.get(ids)
        unknown = sorted(set(ids) - {hit.id for hit in hits})
        if unknown:
            raise TextLogError(f"no log entries with ids {unknown[:5]} in this text log")
        foreign = [h.id for h in hits if (h.metadata.get("user_id"), h.metadata.get("session_id")) != (user_id, session_id)]
        if foreign:
            raise TextLogError(f"entries {foreign[:5]} belong to another session than {user_id}/{session_id}")
        hashes = {hit.metadata["content_hash"] for hit in hits}

        def forgotten(message: ChatMessage) -> bool:
            role = DOCUMENT_ROLE if message.metadata.get("kind") == "document" else message.role
            return content_hash(user_id, session_id, role, message.content) in hashes

        before = len(self.runtime.store.require(SessionKey(user_id=user_id, session_id=session_id)).messages)
        meta = self.runtime.rebuild(session_id, user_id=user_id, keep=lambda m: not forgotten(m), progress=progress)
        removed = self.textlog.delete(self.textlog.ids_for_hashes(hashes, user_id=user_id, session_id=session_id))
        return ForgetReport(log_entries_removed=removed, messages_removed=before - meta.message_count, state_rebuilt=True)


class ForgetReport(BaseModel):
    """What `HybridMemory.forget` did; ``state_rebuilt`` says the state was written anew."""

    log_entries_removed: int
    messages_removed: int | None
    state_rebuilt: bool
