"""`HybridMemory`: δ-mem working memory next to a verbatim text log, with a router between.

This is the one conversation path that the integrations (LangChain, LlamaIndex) and the
server share. A turn goes like this:

1. the client's messages are matched against the session, so that a client that sends the
   whole conversation each time and a client that sends only the new message both work
   (`MemorySession.new_messages`);
2. for a user question, the router looks at the best log hits and at how strongly the state
   answers the question, and decides whether log snippets go into the context. Snippets enter as a
   system note that is never written into the state, because it is already remembered;
3. the model answers (tools are described in a note too, and its calls are parsed);
4. the new messages and the answer go into the text log, and the session (log + state) is
   committed atomically.

Without a text log (``textlog=None``) the same path runs on the state alone. `astream_chat` runs
the same turn for asyncio code; ``stateless=True`` answers a conversation without storing it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from deltamem_agents.concurrency import iterate_in_thread
from deltamem_agents.memory.notes import SNIPPET_HEADER, snippet_text
from deltamem_agents.memory.retention import MemoryRetention, RetentionPolicy
from deltamem_agents.memory.routing import MemoryRouter, RouteDecision, RouterInput
from deltamem_agents.memory.textlog import (
    DOCUMENT_ROLE,
    LogHit,
    TextLog,
    TextLogError,
    content_hash,
)
from deltamem_agents.memory.verbs import MemoryItem, MemoryVerbs, ResetReport
from deltamem_agents.progress import ProgressLike
from deltamem_agents.session.session import (
    MemorySession,
    MessageLike,
    Reply,
    SessionError,
    ToolLike,
    TurnStats,
    as_message,
    is_note,
    template_view,
)
from deltamem_agents.session.tools import ToolCall
from deltamem_agents.store.records import ChatMessage, SessionKey

if TYPE_CHECKING:
    from deltamem_agents.runtime import DeltaMemRuntime

logger = logging.getLogger(__name__)

def snippet_note(decision: RouteDecision | None) -> ChatMessage | None:
    """The system note that puts the router's snippets before the question: context for this
    answer only (``metadata.kind == "retrieved"``: never written into the state); ``None`` when
    nothing was retrieved."""
    if decision is None or not decision.snippets:
        return None
    return ChatMessage(
        role="system",
        content=snippet_text(hit.text for hit in decision.snippets),
        metadata={"kind": "retrieved", "retrieved_ids": list(decision.retrieved_ids)},
    )


#: Decodes the answer of one turn: ``decoder(session, message, tools=..., tool_choice=..., **generation)``
#: yields the text and leaves the `Reply` in ``session.last_reply``, as `MemorySession.stream` (the
#: default) does. A server passes one that decodes several sessions in one batch (`session.batch`).
TurnDecoder = Callable[..., Iterator[str]]


class HybridConfig(BaseModel):
    """How `HybridMemory` uses the log."""

    model_config = ConfigDict(extra="forbid")

    search_k: int = Field(8, ge=1, description="log hits the router chooses from")
    measure_state_confidence: bool = Field(
        True, description="probe the state with the question (one extra short forward) for the router"
    )
    log_source: str = Field("chat", description="`source` metadata of logged chat messages")
    retention: RetentionPolicy = Field(
        default_factory=RetentionPolicy, description="the policy of users without their own (`set_retention`)"
    )


class Usage(BaseModel):
    """Token counts of one turn, as OpenAI-style APIs report them."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class HybridReply(BaseModel):
    """A reply with everything that shaped it: the routing decision (``None`` when no routing
    happened: no text log, or the turn was a tool result), the state confidence and the cost."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    text: str
    tool_calls: list[ToolCall] = Field(default_factory=list)
    finish_reason: Literal["stop", "length", "tool_calls"]
    reply: Reply
    decision: RouteDecision | None = None
    state_confidence: float | None = None
    usage: Usage
    session_id: str
    user_id: str
    turn: int = Field(description="turns committed in the session after this one")

    @property
    def stats(self) -> TurnStats:
        return self.reply.stats

    def metadata(self) -> dict[str, Any]:
        """A JSON-ready summary for response metadata (LangChain, LlamaIndex, the server)."""
        out: dict[str, Any] = {
            "session_id": self.session_id,
            "user_id": self.user_id,
            "turn": self.turn,
            "finish_reason": self.finish_reason,
            "state_confidence": self.state_confidence,
            "stats": self.stats.model_dump(),
        }
        if self.decision is not None:
            out["route"] = self.decision.route
            out["route_reason"] = self.decision.reason
            out["retrieved_ids"] = list(self.decision.retrieved_ids)
        return out


class HybridChunk(BaseModel):
    """One streamed piece; the last chunk has ``text == ""`` and carries the whole ``reply``."""

    text: str
    reply: HybridReply | None = None


class ForgetReport(BaseModel):
    """What `HybridMemory.forget` did; ``state_rebuilt`` says the state was written anew."""

    log_entries_removed: int
    messages_removed: int | None
    state_rebuilt: bool


def _last_chunk(
    reply: Reply, usage: Usage, *, session_id: str, user_id: str, turn: int,
    decision: RouteDecision | None = None, confidence: float | None = None,
) -> HybridChunk:
    """The closing chunk of a turn: the whole `HybridReply`."""
    return HybridChunk(
        text="",
        reply=HybridReply(
            text=reply.text, tool_calls=reply.tool_calls, finish_reason=reply.finish_reason, reply=reply,
            decision=decision, state_confidence=confidence, usage=usage, session_id=session_id, user_id=user_id, turn=turn,
        ),
    )


class HybridMemory(MemoryVerbs, MemoryRetention):
    """The recommended architecture: a `DeltaMemRuntime` session + a `TextLog` + a `MemoryRouter`.

    Besides chat, it has the memory verbs (`MemoryVerbs`: add, get, get_all, update, delete,
    history, reset, and their async twins) over the log, the state and the audit, and retention
    (`MemoryRetention`: TTLs, per-user policies, `prune`).

    ``textlog``: a `TextLog`, ``"default"`` (the embedded log in the default folder) or
    ``None`` (state only: no retrieval, no routing).
    """

    def __init__(
        self,
        runtime: DeltaMemRuntime,
        textlog: TextLog | Literal["default"] | None = "default",
        router: MemoryRouter | None = None,
        *,
        config: HybridConfig | None = None,
    ) -> None:
        self.runtime = runtime
        self.textlog: TextLog | None = TextLog() if textlog == "default" else textlog  # type: ignore[assignment]
        self.router = router or MemoryRouter()
        self.config = config or HybridConfig()

    # -- conversation -------------------------------------------------------------------------------
    def chat(
        self,
        conversation: Sequence[MessageLike] | str,
        *,
        session_id: str | None = None,
        user_id: str = "default",
        tools: Sequence[ToolLike] | None = None,
        tool_choice: str | None = None,
        decoder: TurnDecoder | None = None,
        stateless: bool = False,
        **generation: Any,
    ) -> HybridReply:
        """Answer ``conversation`` (the whole conversation or only its new messages) in a session
        (``stateless=True``: in none; see `stream_chat`)."""
        final = None
        for chunk in self.stream_chat(
            conversation, session_id=session_id, user_id=user_id, tools=tools, tool_choice=tool_choice,
            decoder=decoder, stateless=stateless, **generation,
        ):
            final = chunk.reply or final
        assert final is not None
        return final

    def reply(self, text: str, *, session_id: str, user_id: str = "default", **generation: Any) -> HybridReply:
        """Answer one user message."""
        return self.chat(text, session_id=session_id, user_id=user_id, **generation)

    def stream_chat(
        self,
        conversation: Sequence[MessageLike] | str,
        *,
        session_id: str | None = None,
        user_id: str = "default",
        tools: Sequence[ToolLike] | None = None,
        tool_choice: str | None = None,
        decoder: TurnDecoder | None = None,
        stateless: bool = False,
        **generation: Any,
    ) -> Iterator[HybridChunk]:
        """Like `chat`, yielding text as it is decoded; the last chunk carries the `HybridReply`.

        The whole turn holds the session's store lock, so two processes never interleave turns
        of one session. A turn that fails or is abandoned (the stream closed early) commits
        nothing, and the session is reloaded from the store next time. ``decoder`` replaces
        `MemorySession.stream` for the answer (see `TurnDecoder`).

        ``stateless=True`` (no ``session_id``): the conversation is read into a throwaway session,
        answered and forgotten; nothing is read from or written to the store or the log, nothing
        is routed, and the reply's ``session_id`` is ``""``. Its prompt tokens count the whole
        conversation, which is read anew each time."""
        incoming = [ChatMessage(role="user", content=conversation)] if isinstance(conversation, str) else [
            as_message(m) for m in conversation
        ]
        if stateless:
            if session_id is not None:
                raise SessionError("a stateless turn is stored in no session: drop session_id, or stateless=True")
            yield from self._stateless(incoming, user_id=user_id, tools=tools, tool_choice=tool_choice, decoder=decoder, **generation)
            return
        if session_id is None:
            raise TypeError("stream_chat needs session_id= (or stateless=True for a turn that is not stored)")
        key = SessionKey(user_id=user_id, session_id=session_id)
        with self.runtime.store.lock(key):
            session = self.runtime.session(session_id, user_id=user_id)
            try:
                new = [m for m in session.new_messages(incoming) if not is_note(m)]
                if not new:
                    raise SessionError(
                        "nothing new to answer: every message given is already in this session; send a new user message"
                    )
                if new[-1].role not in ("user", "tool"):
                    raise SessionError(f"the last message must be from the user or a tool, not {new[-1].role!r}")
                *earlier, question = new
                turn = sum(m.role == "user" for m in session.messages)
                if earlier:
                    session.ingest(earlier)
                decision, confidence = None, None
                if question.role == "user" and self.textlog is not None:
                    decision, confidence = self._route(session, question.content, user_id=user_id, session_id=session_id)
                decode = decoder or MemorySession.stream
                for piece in decode(session, question, tools=tools, tool_choice=tool_choice, **generation):
                    yield HybridChunk(text=piece)
                reply = session.last_reply
                assert reply is not None
                self._log(new, session.messages[-1], user_id=user_id, session_id=session_id, turn=turn)
                meta = self.runtime.save(session)
            except BaseException:
                self.runtime.close(session_id, user_id=user_id)
                raise
        usage = Usage(prompt_tokens=reply.stats.prefill_tokens, completion_tokens=reply.stats.decode_tokens)
        yield _last_chunk(reply, usage, session_id=session_id, user_id=user_id, turn=meta.turn_count,
                          decision=decision, confidence=confidence)

    def astream_chat(
        self,
        conversation: Sequence[MessageLike] | str,
        *,
        session_id: str | None = None,
        user_id: str = "default",
        tools: Sequence[ToolLike] | None = None,
        tool_choice: str | None = None,
        decoder: TurnDecoder | None = None,
        stateless: bool = False,
        **generation: Any,
    ) -> AsyncIterator[HybridChunk]:
        """`stream_chat` for asyncio code (``async for chunk in memory.astream_chat(...)``).

        The turn runs start to end in one worker thread, because the session's store lock
        belongs to the thread that took it; its chunks arrive on the event loop, its errors are
        raised here. Closing the iterator early (``aclose()``, or a cancelled task) abandons the
        turn: it rolls back in its thread, commits nothing, and ``aclose`` returns once it has."""
        return iterate_in_thread(
            lambda: self.stream_chat(
                conversation, session_id=session_id, user_id=user_id, tools=tools, tool_choice=tool_choice,
                decoder=decoder, stateless=stateless, **generation,
            ),
            name="deltamem-turn",
        )

    def _stateless(
        self, incoming: list[ChatMessage], *, user_id: str, tools: Sequence[ToolLike] | None, tool_choice: str | None,
        decoder: TurnDecoder | None, **generation: Any,
    ) -> Iterator[HybridChunk]:
        """A turn in a throwaway session: the conversation is read, answered and forgotten."""
        messages = [m for m in incoming if not is_note(m)]
        if not messages or messages[-1].role not in ("user", "tool"):
            raise SessionError("the last message must be from the user or a tool")
        runtime = self.runtime
        session = MemorySession(runtime.model, runtime.tokenizer, runtime.handle, config=runtime.session_config, lock=runtime.lock)
        *earlier, question = messages
        prompt_tokens = session.ingest(earlier).prefill_tokens if earlier else 0
        decode = decoder or MemorySession.stream
        for piece in decode(session, question, tools=tools, tool_choice=tool_choice, **generation):
            yield HybridChunk(text=piece)
        reply = session.last_reply
        assert reply is not None
        usage = Usage(prompt_tokens=prompt_tokens + reply.stats.prefill_tokens, completion_tokens=reply.stats.decode_tokens)
        yield _last_chunk(reply, usage, session_id="", user_id=user_id, turn=0)

    def router_input(self, query: str, *, session_id: str, user_id: str = "default") -> RouterInput:
        """What the router would see for ``query`` in a session now (log hits and state
        confidence), without changing anything; e.g. to label turns for `calibrate`."""
        if self.textlog is None:
            raise TextLogError("routing needs a text log; this HybridMemory has none (textlog=None)")
        with self.runtime.store.lock(SessionKey(user_id=user_id, session_id=session_id)):
            session = self.runtime.session(session_id, user_id=user_id)
            return self._router_input(session, query, user_id=user_id, session_id=session_id)

    def explain(self, query: str, *, session_id: str, user_id: str = "default") -> RouteDecision:
        """The decision the router would make for ``query`` now (nothing is written or logged)."""
        return self.router.decide(self.router_input(query, session_id=session_id, user_id=user_id))

    def _router_input(self, session: Any, query: str, *, user_id: str, session_id: str) -> RouterInput:
        assert self.textlog is not None
        hits = self.textlog.search(query, user_id=user_id, session_id=session_id, k=self.config.search_k)
        confidence = session.state_confidence(query) if self.config.measure_state_confidence else None
        return RouterInput(query=query, hits=hits, state_confidence=confidence)

    def _route(self, session: Any, query: str, *, user_id: str, session_id: str) -> tuple[RouteDecision, float | None]:
        inp = self._router_input(session, query, user_id=user_id, session_id=session_id)
        decision = self.router.route(inp)
        confidence = inp.state_confidence
        note = snippet_note(decision)
        if note is not None:
            session.ingest(note)
        return decision, confidence

    def _log(self, new: Sequence[ChatMessage], answer: ChatMessage, *, user_id: str, session_id: str, turn: int) -> None:
        if self.textlog is None:
            return
        for message in [*new, answer]:
            if message.role == "system":
                continue
            text = template_view(message)["content"]  # tool calls included
            if text.strip():
                logged = message.model_copy(update={"content": text})
                self.textlog.add_message(logged, user_id=user_id, session_id=session_id, turn=turn, source=self.config.log_source)

    # -- memory management ----------------------------------------------------------------------------
    def ingest(
        self, messages: Sequence[MessageLike] | str, *, session_id: str, user_id: str = "default",
        progress: ProgressLike = False,
    ) -> int:
        """Write messages into the state and the log without answering; returns tokens written
        (`add` does the same and returns the memory ids instead). ``progress``: as
        `MemorySession.ingest` (a reporter, or True for a bar on long inputs)."""
        new = [ChatMessage(role="user", content=messages)] if isinstance(messages, str) else [as_message(m) for m in messages]
        return self._ingest(new, session_id=session_id, user_id=user_id, progress=progress)[0]

    def _ingest(
        self, new: list[ChatMessage], *, session_id: str, user_id: str, extra: dict[str, Any] | None = None,
        progress: ProgressLike = False,
    ) -> tuple[int, list[list[str]]]:
        """`ingest` and `add`: (tokens written, the log's chunk ids of each logged message)."""
        logged_ids: list[list[str]] = []
        with self.runtime.store.lock(SessionKey(user_id=user_id, session_id=session_id)):
            session = self.runtime.session(session_id, user_id=user_id)
            turn = sum(m.role == "user" for m in session.messages)
            try:
                stats = session.ingest(new, progress=progress)
                if self.textlog is not None:
                    for message in new:
                        text = template_view(message)["content"]  # tool calls included, as `_log` does
                        if message.role != "system" and text.strip():
                            logged = message.model_copy(update={"content": text})
                            logged_ids.append(self.textlog.add_message(
                                logged, user_id=user_id, session_id=session_id, turn=turn, source=self.config.log_source,
                                metadata=extra,
                            ))
                self.runtime.save(session)
            except BaseException:
                self.runtime.close(session_id, user_id=user_id)
                raise
        return stats.tokens_written, logged_ids

    def ingest_document(self, text: str, *, session_id: str, source: str, user_id: str = "default") -> list[str]:
        """Write a document into the state (as a user message) and, chunked, into the log."""
        with self.runtime.store.lock(SessionKey(user_id=user_id, session_id=session_id)):
            session = self.runtime.session(session_id, user_id=user_id)
            try:
                session.ingest(ChatMessage(role="user", content=text, metadata={"source": source, "kind": "document"}))
                ids = self.textlog.add_document(text, user_id=user_id, session_id=session_id, source=source) if self.textlog else []
                self.runtime.save(session)
            except BaseException:
                self.runtime.close(session_id, user_id=user_id)
                raise
        return ids

    def search(self, query: str, *, user_id: str = "default", session_id: str | None = None, k: int = 4) -> list[LogHit]:
        """The log entries closest to ``query`` (a user's whole log when ``session_id`` is None)."""
        if self.textlog is None:
            raise TextLogError("this HybridMemory has no text log (textlog=None): nothing to search")
        return self.textlog.search(query, user_id=user_id, session_id=session_id, k=k)

    def forget(
        self, *, session_id: str, user_id: str = "default", ids: list[str] | None = None, progress: bool = True
    ) -> ForgetReport:
        """Forget log entries (``ids``; a chunk forgets its whole message) or, with no ids, the
        whole session. The OSAM state cannot unlearn, so the session's state is rebuilt by
        replaying the remaining messages into a fresh state (a progress bar shows it)."""
        if ids is None:
            removed = self.textlog.delete_session(user_id=user_id, session_id=session_id) if self.textlog else 0
            self.runtime.delete(session_id, user_id=user_id)
            return ForgetReport(log_entries_removed=removed, messages_removed=None, state_rebuilt=False)
        if self.textlog is None:
            raise TextLogError("forgetting by log entry id needs a text log; this HybridMemory has none")
        hits = self.textlog.get(ids, user_id=user_id)
        unknown = sorted(set(ids) - {hit.id for hit in hits})
        if unknown:
            raise TextLogError(f"no log entries with ids {unknown[:5]} for user {user_id!r} in this text log")
        foreign = [h.id for h in hits if (h.metadata.get("user_id"), h.metadata.get("session_id")) != (user_id, session_id)]
        if foreign:
            raise TextLogError(f"entries {foreign[:5]} belong to another session than {user_id}/{session_id}")
        hashes = {hit.metadata["content_hash"] for hit in hits}

        def forgotten(message: ChatMessage) -> bool:
            role = DOCUMENT_ROLE if message.metadata.get("kind") == "document" else message.role
            text = template_view(message)["content"]
            return content_hash(user_id, session_id, role, text) in hashes

        before = len(self.runtime.store.require(SessionKey(user_id=user_id, session_id=session_id)).messages)
        meta = self.runtime.rebuild(session_id, user_id=user_id, keep=lambda m: not forgotten(m), progress=progress)
        removed = self.textlog.delete(self.textlog.ids_for_hashes(hashes, user_id=user_id, session_id=session_id),
                                      user_id=user_id)
        return ForgetReport(log_entries_removed=removed, messages_removed=before - meta.message_count, state_rebuilt=True)


__all__ = [
    "SNIPPET_HEADER",
    "ForgetReport",
    "HybridChunk",
    "HybridConfig",
    "HybridMemory",
    "HybridReply",
    "MemoryItem",
    "ResetReport",
    "TurnDecoder",
    "Usage",
    "snippet_note",
]
