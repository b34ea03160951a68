"""Request and response bodies of the server, as pydantic models (they make the OpenAPI schema).

The chat types follow OpenAI's chat-completions API, so the official ``openai`` client and
LangChain's ``ChatOpenAI`` work unchanged. Unknown request parameters are ignored, as OpenAI-
compatible servers usually do; the ones that would change the answer and are not supported
(``n`` > 1, ``logprobs``, non-text content) are refused with a 400 that says so. Responses carry
one extension, ``deltamem``: what memory did in the turn (session, route, state confidence).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from deltamem_agents.memory.audit import MemoryEvent
from deltamem_agents.memory.verbs import MemoryItem, ResetReport
from deltamem_agents.runtime import WarmSessionStats
from deltamem_agents.store.records import Fingerprint

FinishReason = Literal["stop", "length", "tool_calls"]
#: What a session id looks like (documented in the schema; `validate_id` checks it, with its
#: one extra rule: no "..").
SESSION_ID_SCHEMA = {"pattern": r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$"}


# -- errors ----------------------------------------------------------------------------------------
class ErrorDetail(BaseModel):
    message: str = Field(description="what went wrong and how to fix it")
    type: str = Field(description="error class, e.g. invalid_request_error, authentication_error")
    param: str | None = Field(None, description="the request field at fault, if one is")
    code: str | None = Field(None, description="a stable machine-readable code")


class ErrorResponse(BaseModel):
    """Every error, in OpenAI's shape, so clients show ``error.message``."""

    error: ErrorDetail


# -- chat completions: request ------------------------------------------------------------------------
class ContentPart(BaseModel):
    """One part of a message's content; only ``text`` parts are supported (others: 400)."""

    model_config = ConfigDict(extra="allow")

    type: Literal["text", "image_url", "input_audio", "file", "refusal"]
    text: str | None = None


class FunctionCall(BaseModel):
    name: str = Field(min_length=1)
    arguments: str = Field("", description="the arguments as a JSON string")


class ToolCallIn(BaseModel):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


Content = Annotated[str, Field(min_length=1)] | list[ContentPart]


class SystemMessageIn(BaseModel):
    """Instructions (``developer`` is read as ``system``)."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer"]
    content: Content
    name: str | None = Field(None, max_length=256)


class UserMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["user"]
    content: Content
    name: str | None = Field(None, max_length=256)


class AssistantMessageIn(BaseModel):
    """An earlier answer; ``content`` may be null when it only calls tools."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = Field(None, max_length=256)
    tool_calls: list[ToolCallIn] | None = None


class ToolMessageIn(BaseModel):
    """A tool's result, answering the call ``tool_call_id``."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["tool"]
    content: Content
    tool_call_id: str = Field(min_length=1, max_length=256)


#: A chat message as OpenAI clients send it, told apart by its role.
MessageIn = Annotated[
    SystemMessageIn | UserMessageIn | AssistantMessageIn | ToolMessageIn, Field(discriminator="role")
]


class FunctionDef(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ToolDef(BaseModel):
    type: Literal["function"] = "function"
    function: FunctionDef


class NamedFunction(BaseModel):
    name: str = Field(min_length=1)


class NamedToolChoice(BaseModel):
    type: Literal["function"] = "function"
    function: NamedFunction


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``. The session comes from the ``X-Session-Id`` header or
    ``user``; without either the request is stateless. Send the whole conversation or only its
    new messages: a session drops what it already has."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(description="a model id from GET /v1/models")
    messages: list[MessageIn] = Field(min_length=1, description="the conversation (or its new messages)")
    stream: bool = Field(False, description="answer as server-sent events")
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1, description="reply length limit (deprecated name)")
    max_completion_tokens: int | None = Field(None, ge=1, description="reply length limit")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="0 or unset: greedy")
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    stop: str | list[str] | None = Field(None, description="up to 4 stop strings")
    seed: int | None = None
    n: int | None = Field(None, ge=1, description="only 1 is supported")
    tools: list[ToolDef] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    user: str | None = Field(
        None, description="the session id, when no X-Session-Id header is sent", json_schema_extra=SESSION_ID_SCHEMA
    )
    logprobs: bool | None = Field(None, description="not supported: only false")


# -- chat completions: response -----------------------------------------------------------------------
class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCallOut] | None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: None = None


class UsageOut(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TurnInfo(BaseModel):
    """The ``deltamem`` extension: what memory did in this turn."""

    session_id: str | None = Field(description="null for a stateless request")
    user_id: str
    turn: int | None = Field(None, description="turns committed in the session after this one")
    route: str | None = Field(None, description="router decision: state, both or retrieve (null: no routing)")
    route_reason: str | None = None
    retrieved_ids: list[str] = Field(default_factory=list)
    state_confidence: float | None = None
    tokens_written: int = 0
    prefill_ms: float = 0.0
    decode_ms: float = 0.0


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: UsageOut
    system_fingerprint: str | None = None
    deltamem: TurnInfo | None = None


class ToolCallDelta(BaseModel):
    index: int
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: FinishReason | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed answer (``data: {...}``; the stream ends with
    ``data: [DONE]``)."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: UsageOut | None = None
    system_fingerprint: str | None = None
    deltamem: TurnInfo | None = None


# -- models and health --------------------------------------------------------------------------------
class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "deltamem"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class SchedulerStats(BaseModel):
    """What the scheduler has done since the server started."""

    turns_started: int = 0
    turns_finished: int = 0
    turns_failed: int = Field(0, description="ended with an error (nothing committed)")
    turns_cancelled: int = Field(0, description="abandoned by their streaming client (nothing committed)")
    turns_running: int = Field(0, description="running or waiting for their session")
    batches: int = Field(0, description="batched decode steps (one forward for every running turn)")
    batched_rows: int = Field(0, description="turns summed over those steps (tokens decoded in batch)")
    max_batch_rows: int = Field(0, description="the most turns one step decoded")
    batch_joins: int = Field(0, description="turns that joined the running batch")
    serial_decodes: int = Field(0, description="answers decoded alone (batching off)")
    prefill_tokens: int = Field(0, description="tokens prefilled by finished turns (their new messages; context rebuilds apart)")
    rebuild_tokens: int = Field(0, description="tokens re-fed by finished turns to rebuild a context (a cold session, a full window)")


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str
    backbone: str
    batching: bool
    textlog: bool
    auth_required: bool
    scheduler: SchedulerStats
    warm_sessions: WarmSessionStats = Field(default_factory=WarmSessionStats)


# -- sessions ----------------------------------------------------------------------------------------------
class SessionInfo(BaseModel):
    id: str
    user_id: str
    created_at: datetime
    updated_at: datetime
    turn_count: int
    message_count: int
    tokens_written: int
    fingerprint: Fingerprint


class SessionList(BaseModel):
    object: Literal["list"] = "list"
    data: list[SessionInfo]


class MessageOut(BaseModel):
    index: int = Field(description="position in the session's log")
    role: str
    content: str
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    kind: str | None = Field(None, description="'retrieved' or 'tools' for system notes; 'document' for ingested text")
    created_at: datetime


class SessionDetail(SessionInfo):
    messages: list[MessageOut] = Field(description="the last `limit` messages of the log")
    messages_total: int


class IngestMessages(BaseModel):
    """Chat messages to write into a session without answering (the session is created if new)."""

    model_config = ConfigDict(extra="forbid")

    messages: list[MessageIn] = Field(min_length=1)


class IngestDocument(BaseModel):
    """One document to write into a session: whole into the state, chunked into the text log."""

    model_config = ConfigDict(extra="forbid")

    document: str = Field(min_length=1)
    source: str = Field("api", min_length=1, max_length=256, description="where the document came from")


#: ``POST /v1/sessions/{id}/ingest`` takes either kind of body.
IngestRequest = IngestMessages | IngestDocument


class IngestResponse(BaseModel):
    id: str
    tokens_written: int = Field(description="tokens written into the state (messages only; 0 for a document)")
    log_ids: list[str] = Field(default_factory=list, description="text log entries of a document")
    turn_count: int
    message_count: int


class ForgetRequest(BaseModel):
    """Forget text log entries (ids from the search route); the state is rebuilt by replay."""

    model_config = ConfigDict(extra="forbid")

    ids: list[str] = Field(min_length=1, max_length=1000)


class ForgetResponse(BaseModel):
    id: str
    log_entries_removed: int
    messages_removed: int | None
    state_rebuilt: bool


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=10_000)
    k: int = Field(4, ge=1, le=100)


class SearchHit(BaseModel):
    id: str
    text: str
    distance: float | None
    role: str | None = None
    turn: int | None = None


class SearchResponse(BaseModel):
    id: str
    hits: list[SearchHit]


class DeleteResponse(BaseModel):
    id: str
    deleted: bool
    log_entries_removed: int


class LayerStats(BaseModel):
    layer: int
    norm: float | None = Field(description="Frobenius norm of the layer's state (null if not finite)")
    max_abs: float | None
    mean_abs: float | None


class StateStats(BaseModel):
    """Statistics of a session's committed δ-mem state (never the raw tensors)."""

    id: str
    turn_count: int
    message_count: int
    tokens_written: int
    empty: bool = Field(description="no state written yet")
    layers: int = 0
    heads: int | None = None
    rank: int | None = None
    parameters: int = Field(0, description="numbers in the state, all layers")
    finite: bool = True
    norm: float | None = Field(0.0, description="Frobenius norm over all layers (null if not finite)")
    state_sha256: str | None = None
    per_layer: list[LayerStats] = Field(default_factory=list)
    fingerprint: Fingerprint


# -- memories (the memory verbs of HybridMemory) -------------------------------------------------------------
class AddMemoryRequest(BaseModel):
    """Text or chat messages to remember in one of your sessions (created if new): written into
    its state and its text log, as ingest does, but answered with the memory ids."""

    model_config = ConfigDict(extra="forbid")

    session_id: str = Field(min_length=1, max_length=128, json_schema_extra=SESSION_ID_SCHEMA)
    text: str | None = Field(None, min_length=1, description="one user message; or give `messages`")
    messages: list[MessageIn] | None = Field(None, min_length=1)
    metadata: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="stored on the entries; GET /v1/memories filters on it"
    )
    ttl_seconds: float | None = Field(
        None, gt=0, allow_inf_nan=False,
        description="the entries expire this many seconds from now: unseen at once, removed by POST /v1/memories/prune",
    )

    @model_validator(mode="after")
    def _one_of(self) -> AddMemoryRequest:
        if (self.text is None) == (self.messages is None):
            raise ValueError("give exactly one of `text` and `messages`")
        return self


class AddMemoryResponse(BaseModel):
    ids: list[str] = Field(description="memory ids of what was logged, in order (system messages have none)")
    data: list[MemoryItem]


class MemoryList(BaseModel):
    object: Literal["list"] = "list"
    data: list[MemoryItem]


class UpdateMemoryRequest(BaseModel):
    """The entry's new text; the session's state is re-derived by replaying the corrected messages."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1)


class MemoryDeleteResponse(BaseModel):
    id: str
    deleted: bool
    log_entries_removed: int
    messages_removed: int | None
    state_rebuilt: bool


class MemoryHistory(BaseModel):
    id: str
    events: list[MemoryEvent] = Field(description="every recorded change of the entry, oldest first")


#: ``POST /v1/memories/reset`` answers what was removed.
ResetResponse = ResetReport
