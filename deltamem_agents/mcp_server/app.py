"""`build_mcp_server`: the memory as Model Context Protocol tools and a resource (official `mcp` SDK,
1.x or 2.x; `deltamem_agents.mcp_server.sdk` holds what differs between them).

The tools are async wrappers over `MemoryService`: each call runs in a worker thread, one at a
time (the model and the session locks are shared), so the event loop keeps serving the transport
while the model decodes. Errors the caller can fix (unknown session, bad ids, empty text) come
back as MCP tool errors with one clear sentence (resource reads: protocol errors with the same
sentence); the memory is left as it was.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, ParamSpec, TypeVar

from pydantic import Field, ValidationError

from deltamem_agents.mcp_server.schemas import (
    AddMemoryResult,
    DeleteMemoryResult,
    ForgetResult,
    ForgetScope,
    MemoryHistoryResult,
    MemoryId,
    MemoryListResult,
    MemoryMessage,
    MemoryMetadata,
    MemorySearchResult,
    RecallResult,
    RememberResult,
    RememberRole,
    SessionId,
    SessionList,
    SessionStats,
    UserId,
)
from deltamem_agents.mcp_server.service import LOG_URI, MemoryService, describe
from deltamem_agents.memory.verbs import MemoryItem, ResetReport

if TYPE_CHECKING:
    from deltamem_agents.mcp_server.sdk import Server
    from deltamem_agents.memory.hybrid import HybridMemory

logger = logging.getLogger(__name__)

INSTALL_HINT = "the MCP server needs the official MCP SDK: pip install 'deltamem-agents[mcp]'"
P = ParamSpec("P")
T = TypeVar("T")


def require_mcp() -> None:
    """Import check with the install hint (the SDK is an optional extra; either major will do).
    Looked up in ``sys.modules`` each time, so a test can make the SDK absent."""
    try:
        importlib.import_module("deltamem_agents.mcp_server.sdk")
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({exc})") from exc


def _user_errors() -> tuple[type[BaseException], ...]:
    """What a tool reports as a tool error (its message, no traceback): every error the SDK raises
    on purpose, and pydantic's validation errors."""
    from deltamem_agents.errors import DeltaMemError

    return (DeltaMemError, ValidationError)


INSTRUCTIONS = """\
Long-term memory of a δ-mem language model ({backbone}; adapter: {adapter}).
Each (user_id, session_id) session keeps an associative memory state inside the model, plus a
verbatim text log ({textlog}). `remember` writes text into a session; `recall` routes a query
(state alone, or log snippets too) and returns the decision and the model's reply, by default
without changing memory; `forget` removes log entries (the state is rebuilt by replaying the rest),
a session or a user. `list_sessions` and `session_stats` read; each session's messages are the
resource {log_uri}.
The memory verbs work on memory entries (one logged message or document each, with a stable memory
id): `add_memory` (returns the ids), `get_memory`, `list_memories` (filters: session, time, metadata),
`search_memories`, `update_memory` (corrects the text; the state is re-derived by replay),
`delete_memory`, `memory_history` (every change) and `reset_memories` (all of a user's memory; needs
confirm=true)."""


def build_mcp_server(
    hybrid: HybridMemory, *, name: str = "deltamem", max_new_tokens: int = 128, log_level: str = "INFO",
) -> Server:
    """An MCP server exposing ``hybrid``, for any transport: `sdk.serve_stdio` or
    `sdk.serve_streamable_http` runs it (or an SDK client connects to it in process)."""
    require_mcp()
    import anyio

    from deltamem_agents.errors import NotFoundError
    from deltamem_agents.mcp_server.sdk import (
        ResourceError,
        ResourceNotFoundError,
        ToolError,
        new_server,
        tool_annotations,
    )

    service = MemoryService(hybrid, max_new_tokens=max_new_tokens)
    facts = describe(hybrid)
    server = new_server(name, instructions=INSTRUCTIONS.format(**facts, log_uri=LOG_URI), log_level=log_level)
    limiter = anyio.CapacityLimiter(1)  # one model operation at a time; the transport keeps running
    user_errors = _user_errors()

    def in_worker(func: Callable[P, T]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(func)
        async def run(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return await anyio.to_thread.run_sync(functools.partial(func, *args, **kwargs), limiter=limiter)
            except user_errors as exc:
                raise ToolError(" ".join(str(exc).split())) from exc

        return run

    remember = in_worker(service.remember)
    recall = in_worker(service.recall)
    forget = in_worker(service.forget)
    list_sessions = in_worker(service.list_sessions)
    session_stats = in_worker(service.session_stats)
    session_log = in_worker(service.session_log)

    @server.tool(
        name="remember",
        annotations=tool_annotations("Remember text", read_only=False, destructive=False, idempotent=False),
    )
    async def remember_tool(
        text: Annotated[str, Field(min_length=1, description="what to remember, verbatim")],
        user_id: UserId,
        session_id: SessionId,
        role: Annotated[RememberRole, Field(description="who said it; system text goes into the state, not the log")] = "user",
    ) -> RememberResult:
        """Write text into a session's memory: the δ-mem state (model memory) and the text log.
        The session is created if it does not exist. Returns the log entry ids (for `forget`)."""
        return await remember(text, user_id=user_id, session_id=session_id, role=role)

    @server.tool(
        name="recall",
        annotations=tool_annotations("Recall", read_only=False, destructive=False, idempotent=False),
    )
    async def recall_tool(
        query: Annotated[str, Field(min_length=1, description="the question to answer from memory")],
        user_id: UserId,
        session_id: SessionId,
        write: Annotated[
            bool, Field(description="False (default): a probe, memory is unchanged. True: the turn is saved and logged")
        ] = False,
        max_new_tokens: Annotated[int | None, Field(ge=1, description="reply length limit (default: the server's)")] = None,
    ) -> RecallResult:
        """Answer a query from a session's memory: the router's decision (state, retrieve or both),
        its reason and votes, the log snippets it used (with ids), and the reply of the model
        reading its δ-mem state. By default nothing is written."""
        return await recall(query, user_id=user_id, session_id=session_id, write=write, max_new_tokens=max_new_tokens)

    @server.tool(
        name="forget",
        annotations=tool_annotations("Forget", read_only=False, destructive=True, idempotent=False),
    )
    async def forget_tool(
        scope: Annotated[
            ForgetScope,
            Field(description="entries: these log entries (and their messages); session: a whole session; user: all of a user's sessions"),
        ],
        user_id: UserId,
        session_id: Annotated[SessionId | None, Field(description="the session (scopes entries and session)")] = None,
        entry_ids: Annotated[list[str] | None, Field(description="text-log entry ids (scope entries)")] = None,
    ) -> ForgetResult:
        """Forget memory. The δ-mem state cannot unlearn: forgetting entries removes their
        messages and rebuilds the session's state by replaying the messages that remain."""
        return await forget(scope, user_id=user_id, session_id=session_id, entry_ids=entry_ids)

    @server.tool(name="list_sessions", annotations=tool_annotations("List sessions", read_only=True))
    async def list_sessions_tool(
        user_id: Annotated[UserId | None, Field(description="only this user's sessions (default: every user)")] = None,
    ) -> SessionList:
        """Every stored session: turns, messages, tokens written, last update, log resource URI."""
        return await list_sessions(user_id)

    @server.tool(name="session_stats", annotations=tool_annotations("Session stats", read_only=True))
    async def session_stats_tool(user_id: UserId, session_id: SessionId) -> SessionStats:
        """One session's counters, δ-mem state size (fixed, whatever the conversation's length),
        text-log entries and the model fingerprint its state is valid for."""
        return await session_stats(user_id=user_id, session_id=session_id)

    add_memory = in_worker(service.add_memory)
    get_memory = in_worker(service.get_memory)
    list_memories = in_worker(service.list_memories)
    search_memories = in_worker(service.search_memories)
    update_memory = in_worker(service.update_memory)
    delete_memory = in_worker(service.delete_memory)
    memory_history = in_worker(service.memory_history)
    reset_memories = in_worker(service.reset_memories)

    @server.tool(
        name="add_memory",
        annotations=tool_annotations("Add memory", read_only=False, destructive=False, idempotent=False),
    )
    async def add_memory_tool(
        user_id: UserId,
        session_id: SessionId,
        text: Annotated[str | None, Field(min_length=1, description="one user message to remember; or give `messages`")] = None,
        messages: Annotated[
            list[MemoryMessage] | None,
            Field(min_length=1, description="messages to remember, in order (system ones go into the state, not the log)"),
        ] = None,
        metadata: Annotated[
            MemoryMetadata | None, Field(description="stored on the entries; `list_memories` filters on it")
        ] = None,
    ) -> AddMemoryResult:
        """Remember text or messages in a session (created if new): written into its δ-mem state
        and its text log. Returns one memory id per logged message, for the other memory tools."""
        return await add_memory(user_id=user_id, session_id=session_id, text=text, messages=messages, metadata=metadata)

    @server.tool(name="get_memory", annotations=tool_annotations("Get memory", read_only=True))
    async def get_memory_tool(memory_id: MemoryId, user_id: UserId) -> MemoryItem:
        """One memory entry of the user: its whole text, session, role, kind, time, chunk ids and metadata."""
        return await get_memory(memory_id, user_id=user_id)

    @server.tool(name="list_memories", annotations=tool_annotations("List memories", read_only=True))
    async def list_memories_tool(
        user_id: UserId,
        session_id: Annotated[SessionId | None, Field(description="only this session's entries")] = None,
        since: Annotated[datetime | None, Field(description="logged at or after (ISO 8601; naive is UTC)")] = None,
        until: Annotated[datetime | None, Field(description="logged before (ISO 8601; naive is UTC)")] = None,
        metadata: Annotated[
            MemoryMetadata | None,
            Field(description='fields the entries must have, e.g. {"topic": "pets"} (also role, kind, source)'),
        ] = None,
        limit: Annotated[int, Field(ge=1, le=10_000, description="at most this many entries")] = 100,
    ) -> MemoryListResult:
        """The user's memory entries in log order, with optional filters; `truncated` says more match."""
        return await list_memories(user_id=user_id, session_id=session_id, since=since, until=until, metadata=metadata,
                                   limit=limit)

    @server.tool(name="search_memories", annotations=tool_annotations("Search memories", read_only=True))
    async def search_memories_tool(
        query: Annotated[str, Field(min_length=1, description="what to look for, by meaning")],
        user_id: UserId,
        session_id: Annotated[SessionId | None, Field(description="only this session (default: all of the user's)")] = None,
        k: Annotated[int, Field(ge=1, le=100, description="how many hits")] = 4,
    ) -> MemorySearchResult:
        """The text-log chunks closest to the query, with their memory ids; the model is not run."""
        return await search_memories(query, user_id=user_id, session_id=session_id, k=k)

    @server.tool(
        name="update_memory",
        annotations=tool_annotations("Update memory", read_only=False, destructive=True, idempotent=True),
    )
    async def update_memory_tool(
        memory_id: MemoryId,
        text: Annotated[str, Field(min_length=1, description="the entry's new text (replaces the old)")],
        user_id: UserId,
    ) -> MemoryItem:
        """Correct a memory entry. The id stays; the session's message is replaced and its δ-mem
        state re-derived by replaying the corrected messages (the state cannot be edited in place)."""
        return await update_memory(memory_id, text, user_id=user_id)

    @server.tool(
        name="delete_memory",
        annotations=tool_annotations("Delete memory", read_only=False, destructive=True, idempotent=True),
    )
    async def delete_memory_tool(memory_id: MemoryId, user_id: UserId) -> DeleteMemoryResult:
        """Forget one memory entry: its message leaves the session and the state is rebuilt by
        replaying the rest. Its history stays readable (`memory_history`)."""
        return await delete_memory(memory_id, user_id=user_id)

    @server.tool(name="memory_history", annotations=tool_annotations("Memory history", read_only=True))
    async def memory_history_tool(memory_id: MemoryId, user_id: UserId) -> MemoryHistoryResult:
        """Every recorded change of a memory entry, oldest first: ADD, UPDATE, DELETE with old and
        new text, time and the call that made it (also for a deleted entry)."""
        return await memory_history(memory_id, user_id=user_id)

    @server.tool(
        name="reset_memories",
        annotations=tool_annotations("Reset memories", read_only=False, destructive=True, idempotent=True),
    )
    async def reset_memories_tool(
        user_id: UserId,
        confirm: Annotated[
            bool, Field(description="must be true: the reset deletes every session, log entry and history of the user")
        ] = False,
    ) -> ResetReport:
        """Delete all of a user's memory: every session (state and messages), log entry and history
        event. Cannot be undone; refused unless confirm=true. Other users are untouched."""
        return await reset_memories(user_id=user_id, confirm=confirm)

    @server.resource(
        LOG_URI, name="session_log", mime_type="application/json",
        description="every committed message of a session, in order (JSON)",
    )
    async def session_log_resource(user_id: str, session_id: str) -> str:
        try:
            log = await session_log(user_id=user_id, session_id=session_id)
        except ToolError as exc:  # the same sentence, as the resource error the SDK passes on
            missing = isinstance(exc.__cause__, NotFoundError)
            raise (ResourceNotFoundError if missing else ResourceError)(str(exc)) from None
        return log.model_dump_json(indent=2)

    return server


__all__ = ["INSTALL_HINT", "build_mcp_server", "require_mcp"]
