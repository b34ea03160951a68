"""Memory routes: list, read, delete, ingest into, forget from, search and measure sessions.

Every route is scoped to the caller's user (the API key's), so another user's session id is
simply unknown here (404). Verbs that change a session go through the scheduler, one at a time
per session like turns; reads only read the store.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from deltamem_agents.server.auth import Principal, principal
from deltamem_agents.server.context import ServerContext, context
from deltamem_agents.server.errors import ERROR_RESPONSES, APIError
from deltamem_agents.server.openai_format import message_text
from deltamem_agents.server.schemas import (
    SESSION_ID_SCHEMA,
    DeleteResponse,
    ForgetRequest,
    ForgetResponse,
    IngestDocument,
    IngestRequest,
    IngestResponse,
    LayerStats,
    MessageIn,
    MessageOut,
    SearchHit,
    SearchRequest,
    SearchResponse,
    SessionDetail,
    SessionInfo,
    SessionList,
    StateStats,
)
from deltamem_agents.store.records import ChatMessage, SessionKey, SessionMetadata

router = APIRouter(prefix="/v1/sessions", tags=["sessions"], responses=ERROR_RESPONSES)

SessionId = Annotated[
    str, Path(description="the session id (1-128 characters from A-Z a-z 0-9 . _ @ -)", json_schema_extra=SESSION_ID_SCHEMA)
]


def info(meta: SessionMetadata) -> SessionInfo:
    return SessionInfo(
        id=meta.key.session_id, user_id=meta.key.user_id, created_at=meta.created_at, updated_at=meta.updated_at,
        turn_count=meta.turn_count, message_count=meta.message_count, tokens_written=meta.tokens_written,
        fingerprint=meta.fingerprint,
    )


async def _existing(ctx: ServerContext, who: Principal, session_id: str) -> tuple[SessionKey, SessionMetadata]:
    key = SessionKey(user_id=who.user_id, session_id=session_id)  # InvalidSessionIdError -> 400
    meta = await ctx.scheduler.run_io(lambda: ctx.store.head(key))
    if meta is None:
        raise APIError(
            404, f"no session {session_id!r} for this API key (GET /v1/sessions lists yours)", type="not_found_error",
            code="session_not_found", param="session_id",
        )
    return key, meta


def chat_messages(messages: Sequence[MessageIn]) -> list[ChatMessage]:
    """OpenAI-style messages as the session's messages (``developer`` is ``system``); empty ones: 400."""
    out: list[ChatMessage] = []
    for index, message in enumerate(messages):
        text = message_text(message, index)
        if not text.strip():
            raise APIError(400, f"messages[{index}] is empty", code="empty_message", param=f"messages.{index}.content")
        role = "system" if message.role == "developer" else message.role
        out.append(
            ChatMessage(
                role=role, content=text, name=getattr(message, "name", None),
                tool_call_id=getattr(message, "tool_call_id", None),
            )
        )
    return out


def check_ingest_size(ctx: ServerContext, size: int) -> None:
    """413 for more characters than this server ingests in one request."""
    limit = ctx.settings.max_ingest_chars
    if size > limit:
        raise APIError(
            413, f"{size} characters to ingest, over this server's limit of {limit}: send them in parts, "
            "or raise --max-ingest-chars", code="ingest_too_large",
        )


@router.get("", response_model=SessionList, summary="List your sessions")
async def list_sessions(ctx: ServerContext = Depends(context), who: Principal = Depends(principal)) -> SessionList:
    metas = await ctx.scheduler.run_io(lambda: ctx.store.list(who.user_id))
    return SessionList(data=[info(meta) for meta in metas])


@router.get("/{session_id}", response_model=SessionDetail, summary="A session and its latest messages")
async def get_session(
    session_id: SessionId,
    limit: Annotated[int, Query(ge=0, le=10_000, description="how many of the latest messages to return")] = 100,
    ctx: ServerContext = Depends(context),
    who: Principal = Depends(principal),
) -> SessionDetail:
    key, _ = await _existing(ctx, who, session_id)
    record = await ctx.scheduler.run_io(lambda: ctx.store.load(key))
    if record is None:  # deleted in between
        raise APIError(404, f"session {session_id!r} was just deleted", type="not_found_error", code="session_not_found")
    total = len(record.messages)
    start = max(0, total - limit)
    messages = [
        MessageOut(
            index=start + i, role=m.role, content=m.content, name=m.name, tool_call_id=m.tool_call_id,
            tool_calls=m.tool_calls, kind=m.metadata.get("kind"), created_at=m.created_at,
        )
        for i, m in enumerate(record.messages[start:])
    ]
    return SessionDetail(**info(record.metadata).model_dump(), messages=messages, messages_total=total)


@router.delete("/{session_id}", response_model=DeleteResponse, summary="Delete a session: state, messages and log entries")
async def delete_session(
    session_id: SessionId, ctx: ServerContext = Depends(context), who: Principal = Depends(principal)
) -> DeleteResponse:
    key, _ = await _existing(ctx, who, session_id)

    def delete() -> int:
        with ctx.store.lock(key):  # store lock before the model lock, as turns take them
            return ctx.memory.forget(session_id=key.session_id, user_id=key.user_id).log_entries_removed

    removed = await ctx.scheduler.run_exclusive(key, delete)
    return DeleteResponse(id=session_id, deleted=True, log_entries_removed=removed)


@router.post("/{session_id}/ingest", response_model=IngestResponse, summary="Write messages or a document into a session")
async def ingest(
    session_id: SessionId, body: IngestRequest, ctx: ServerContext = Depends(context), who: Principal = Depends(principal)
) -> IngestResponse:
    key = SessionKey(user_id=who.user_id, session_id=session_id)
    document = body if isinstance(body, IngestDocument) else None
    messages = chat_messages(body.messages) if document is None else []
    check_ingest_size(ctx, len(document.document) if document is not None else sum(len(m.content) for m in messages))
    memory = ctx.memory

    def write() -> tuple[int, list[str], SessionMetadata | None]:
        with ctx.store.lock(key):
            if document is not None:
                ids = memory.ingest_document(document.document, session_id=key.session_id, source=document.source, user_id=key.user_id)
                written = 0
            else:
                written, ids = memory.ingest(messages, session_id=key.session_id, user_id=key.user_id), []
            return written, ids, ctx.store.head(key)

    written, ids, meta = await ctx.scheduler.run_exclusive(key, write)
    assert meta is not None
    return IngestResponse(
        id=session_id, tokens_written=written, log_ids=ids, turn_count=meta.turn_count, message_count=meta.message_count
    )


@router.post("/{session_id}/forget", response_model=ForgetResponse, summary="Forget text log entries; the state is rebuilt")
async def forget(
    session_id: SessionId, body: ForgetRequest, ctx: ServerContext = Depends(context), who: Principal = Depends(principal)
) -> ForgetResponse:
    key, _ = await _existing(ctx, who, session_id)

    def run() -> ForgetResponse:
        with ctx.store.lock(key):
            report = ctx.memory.forget(session_id=key.session_id, user_id=key.user_id, ids=body.ids, progress=False)
        return ForgetResponse(id=session_id, **report.model_dump())

    return await ctx.scheduler.run_exclusive(key, run)


@router.post("/{session_id}/search", response_model=SearchResponse, summary="Search a session's text log")
async def search(
    session_id: SessionId, body: SearchRequest, ctx: ServerContext = Depends(context), who: Principal = Depends(principal)
) -> SearchResponse:
    key, _ = await _existing(ctx, who, session_id)
    hits = await ctx.scheduler.run_io(
        lambda: ctx.memory.search(body.query, user_id=key.user_id, session_id=key.session_id, k=body.k)
    )
    return SearchResponse(
        id=session_id,
        hits=[
            SearchHit(id=h.id, text=h.text, distance=h.distance, role=h.metadata.get("role"), turn=h.metadata.get("turn"))
            for h in hits
        ],
    )


@router.get("/{session_id}/state", response_model=StateStats, summary="Statistics of a session's δ-mem state")
async def state(session_id: SessionId, ctx: ServerContext = Depends(context), who: Principal = Depends(principal)) -> StateStats:
    key, _ = await _existing(ctx, who, session_id)
    record = await ctx.scheduler.run_io(lambda: ctx.store.load(key))
    if record is None:
        raise APIError(404, f"session {session_id!r} was just deleted", type="not_found_error", code="session_not_found")
    meta = record.metadata
    stats = StateStats(
        id=session_id, turn_count=meta.turn_count, message_count=meta.message_count, tokens_written=meta.tokens_written,
        empty=record.state is None or len(record.state) == 0, state_sha256=meta.state_sha256, fingerprint=meta.fingerprint,
    )
    if stats.empty:
        return stats
    state_ = record.state
    assert state_ is not None
    per_layer = []
    total_sq, finite, count = 0.0, True, 0
    for layer, tensor in state_.layers.items():
        values = tensor.detach().float()
        norm = float(values.norm())
        finite = finite and bool(values.isfinite().all())
        total_sq += norm * norm
        count += values.numel()
        per_layer.append(
            LayerStats(
                layer=layer, norm=_finite(norm), max_abs=_finite(float(values.abs().max())),
                mean_abs=_finite(float(values.abs().mean())),
            )
        )
    stats.layers, stats.heads, stats.rank, stats.parameters = len(per_layer), state_.num_heads, state_.rank, count
    stats.finite, stats.norm, stats.per_layer = finite, _finite(math.sqrt(total_sq)), per_layer
    return stats


def _finite(value: float) -> float | None:
    """JSON has no NaN or infinity: a broken state reports null (and ``finite: false``)."""
    return value if math.isfinite(value) else None
