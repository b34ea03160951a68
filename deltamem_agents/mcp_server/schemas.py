"""Inputs and outputs of the MCP tools, as pydantic models.

FastMCP derives each tool's JSON input schema from the function signature and its output schema
from the return annotation; these types make both explicit (ids are validated by the same rule
as the session store, so a bad id is refused before anything is touched).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from deltamem_agents.memory.audit import MemoryEvent
from deltamem_agents.memory.verbs import MemoryItem
from deltamem_agents.store.records import ID_RULE, validate_id


def _user_id(value: str) -> str:
    return validate_id("user_id", value)


def _session_id(value: str) -> str:
    return validate_id("session_id", value)


UserId = Annotated[str, AfterValidator(_user_id), Field(description=f"user the memory belongs to ({ID_RULE})")]
SessionId = Annotated[str, AfterValidator(_session_id), Field(description=f"session within the user ({ID_RULE})")]
RememberRole = Literal["user", "assistant", "system"]
ForgetScope = Literal["entries", "session", "user"]
MemoryId = Annotated[
    str, Field(min_length=1, max_length=256, description="a memory id (from add_memory or list_memories; a chunk id "
               "from search_memories works too)"),
]
#: What `add_memory(metadata=...)` may store (the text log keeps scalar values only).
MemoryMetadata = dict[str, str | int | float | bool]


# -- remember ----------------------------------------------------------------------------------
class RememberResult(BaseModel):
    """What `remember` wrote: tokens into the δ-mem state, entries into the text log."""

    user_id: str
    session_id: str
    role: RememberRole
    created_session: bool = Field(description="the session did not exist before this call")
    tokens_written: int = Field(description="tokens written into the δ-mem (OSAM) state")
    log_entry_ids: list[str] = Field(
        description="text-log entries holding the text (a long text is chunked); empty for a system "
        "message or without a text log. Give them to `forget` to forget this text"
    )
    turn_count: int = Field(description="commits of the session so far (each remember and each written recall is one)")
    message_count: int


# -- recall ------------------------------------------------------------------------------------
class Vote(BaseModel):
    """One routing policy's vote (``wants_retrieval`` None: it abstained)."""

    policy: str
    wants_retrieval: bool | None
    score: float
    reason: str


class Snippet(BaseModel):
    """A text-log entry the router placed in the model's context for this answer."""

    id: str
    text: str
    distance: float | None = Field(description="embedding distance to the query (smaller is closer)")
    role: str | None = None
    turn: int | None = None


class SkippedSnippet(BaseModel):
    """A log hit the router looked at and did not use, with why."""

    id: str
    why: str
    distance: float | None = None


class RouteInfo(BaseModel):
    """The router's decision for the query, with the votes that made it."""

    route: Literal["state", "retrieve", "both"] = Field(
        description="state: the δ-mem state alone; retrieve/both: log snippets placed in the context too"
    )
    retrieval_wanted: bool
    reason: str
    mode: str
    votes: list[Vote]
    retrieved_ids: list[str]
    skipped: list[SkippedSnippet]
    tokens_used: int
    token_budget: int


class RecallResult(BaseModel):
    """The router's answer to a query and the state-informed model's reply to it."""

    user_id: str
    session_id: str
    query: str
    reply: str = Field(description="the model's answer, decoded with the session's δ-mem state (and the snippets)")
    finish_reason: Literal["stop", "length", "tool_calls"]
    decision: RouteInfo | None = Field(description="None when the server has no text log (state only)")
    state_confidence: float | None = Field(
        description="how much of the state the query's memory keys read out (0: nothing stored answers it)"
    )
    snippets: list[Snippet] = Field(description="the log entries placed in the context (empty on the state route)")
    wrote: bool = Field(description="False: a probe, memory is exactly as before; True: the turn was saved and logged")
    turn_count: int = Field(description="commits of the session after this call (a probe adds none)")
    prompt_tokens: int
    completion_tokens: int


# -- forget ------------------------------------------------------------------------------------
class ForgetResult(BaseModel):
    """What `forget` removed. The OSAM state cannot unlearn: forgetting entries rebuilds it."""

    scope: ForgetScope
    user_id: str
    session_id: str | None
    sessions_deleted: int = Field(description="whole sessions removed (state, messages and log)")
    messages_removed: int = Field(description="messages removed from surviving sessions")
    log_entries_removed: int
    state_rebuilt: bool = Field(description="the session's state was written anew by replaying the messages that remain")
    note: str


# -- sessions ----------------------------------------------------------------------------------
class SessionSummary(BaseModel):
    """One stored session, as `list_sessions` shows it."""

    user_id: str
    session_id: str
    turns: int
    messages: int
    tokens_written: int
    updated_at: datetime
    log_uri: str = Field(description="the MCP resource holding the session's messages")


class SessionList(BaseModel):
    sessions: list[SessionSummary]


class StateSize(BaseModel):
    """Size of a δ-mem state: fixed, whatever the length of the conversation."""

    layers: int
    heads: int
    rank: int
    dtype: str
    bytes: int
    norm: float


class SessionStats(BaseModel):
    """Counters, memory size and model fingerprint of one session."""

    user_id: str
    session_id: str
    turns: int
    messages: int
    messages_by_role: dict[str, int]
    tokens_written: int
    created_at: datetime
    updated_at: datetime
    state: StateSize | None = Field(description="None until something has been written")
    log_entries: int | None = Field(description="text-log entries of the session (None without a text log)")
    fingerprint: dict[str, Any] = Field(description="backbone, adapter and δ-mem config the state is valid for")
    fingerprint_matches: bool = Field(description="the state was written by this server's backbone, adapter and config")
    log_uri: str


class LoggedMessage(BaseModel):
    """One message of the session log resource."""

    index: int
    role: str
    content: str
    created_at: datetime
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class SessionLog(BaseModel):
    """The `deltamem://sessions/{user_id}/{session_id}/log` resource: every committed message."""

    user_id: str
    session_id: str
    turns: int
    messages: list[LoggedMessage]


# -- the memory verbs (add, get, list, search, update, delete, history, reset) --------------------
class MemoryMessage(BaseModel):
    """One message for `add_memory` (a system message goes into the state, not the log)."""

    model_config = ConfigDict(extra="forbid")

    role: RememberRole
    content: str = Field(min_length=1)


class AddMemoryResult(BaseModel):
    """What `add_memory` logged: one memory id per logged message, in order, and the entries."""

    user_id: str
    session_id: str
    created_session: bool = Field(description="the session did not exist before this call")
    ids: list[str] = Field(description="memory ids of what was logged, in order (system messages have none)")
    memories: list[MemoryItem]


class MemoryListResult(BaseModel):
    """`list_memories`: the user's entries in log order, after the filters."""

    user_id: str
    count: int
    memories: list[MemoryItem]
    truncated: bool = Field(description="the limit was reached: more entries may match (raise limit or narrow the filters)")


class MemoryHit(BaseModel):
    """A text-log chunk close to the query, with the memory id that `update_memory` and
    `delete_memory` take."""

    id: str = Field(description="the chunk id")
    memory_id: str
    text: str = Field(description="the chunk's text (a long memory is several chunks)")
    distance: float | None = Field(description="embedding distance to the query (smaller is closer)")
    session_id: str
    role: str | None = None
    turn: int | None = None


class MemorySearchResult(BaseModel):
    user_id: str
    query: str
    hits: list[MemoryHit]


class DeleteMemoryResult(BaseModel):
    """What `delete_memory` removed. The OSAM state cannot unlearn: the session's state is
    rebuilt by replaying the messages that remain; the entry's history stays readable."""

    id: str
    user_id: str
    session_id: str
    deleted: bool
    log_entries_removed: int
    messages_removed: int | None
    state_rebuilt: bool


class MemoryHistoryResult(BaseModel):
    """Every recorded change of one entry, oldest first (ADD, UPDATE, DELETE)."""

    id: str
    events: list[MemoryEvent]


__all__ = [
    "AddMemoryResult",
    "DeleteMemoryResult",
    "ForgetResult",
    "ForgetScope",
    "LoggedMessage",
    "MemoryHistoryResult",
    "MemoryHit",
    "MemoryId",
    "MemoryListResult",
    "MemoryMessage",
    "MemoryMetadata",
    "MemorySearchResult",
    "RecallResult",
    "RememberResult",
    "RememberRole",
    "RouteInfo",
    "SessionId",
    "SessionList",
    "SessionLog",
    "SessionStats",
    "SessionSummary",
    "SkippedSnippet",
    "Snippet",
    "StateSize",
    "UserId",
    "Vote",
]
