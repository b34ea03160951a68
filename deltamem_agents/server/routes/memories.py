"""Memory routes: the memory verbs of `HybridMemory` (add, list, get, update, delete, history,
reset, retention and prune) over HTTP, under ``/v1/memories``.

Every route is scoped to the caller's user (the API key's): another user's memory id is simply
unknown here (404), and reset wipes the caller's own memory only. Verbs that change a session
run through the scheduler, one at a time per session like turns; reads only read the store.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from deltamem_agents.memory.retention import PruneReport, RetentionPolicy
from deltamem_agents.memory.verbs import MemoryItem
from deltamem_agents.server.auth import Principal, principal
from deltamem_agents.server.context import ServerContext, context
from deltamem_agents.server.errors import ERROR_RESPONSES, APIError
from deltamem_agents.server.routes.sessions import chat_messages, check_ingest_size
from deltamem_agents.server.schemas import (
    AddMemoryRequest,
    AddMemoryResponse,
    MemoryDeleteResponse,
    MemoryHistory,
    MemoryList,
    ResetResponse,
    UpdateMemoryRequest,
)
from deltamem_agents.store.records import ChatMessage, SessionKey

router = APIRouter(prefix="/v1/memories", tags=["memories"], responses=ERROR_RESPONSES)

MemoryId = Annotated[str, Path(min_length=1, max_length=256, description="a memory id (or a log chunk id from search)")]


def _filters(raw: str | None) -> dict[str, Any] | None:
    """The ``metadata`` query parameter: a JSON object of field -> value."""
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise APIError(400, f"metadata must be a JSON object, e.g. {{\"topic\": \"pets\"}} ({exc})", param="metadata") from exc
    if not isinstance(value, dict):
        raise APIError(400, 'metadata must be a JSON object, e.g. {"topic": "pets"}', param="metadata")
    return value


async def _owned(ctx: ServerContext, who: Principal, memory_id: str) -> MemoryItem:
    """The caller's entry (404 for an unknown id and for another user's alike)."""
    return await ctx.scheduler.run_io(lambda: ctx.memory.get(memory_id, user_id=who.user_id))


def _key(who: Principal, item: MemoryItem) -> SessionKey:
    return SessionKey(user_id=who.user_id, session_id=item.session_id)


@router.post("", response_model=AddMemoryResponse, summary="Remember text or messages in one of your sessions")
async def add_memory(
    body: AddMemoryRequest, ctx: ServerContext = Depends(context), who: Principal = Depends(principal)
) -> AddMemoryResponse:
    key = SessionKey(user_id=who.user_id, session_id=body.session_id)  # InvalidSessionIdError -> 400
    messages = [ChatMessage(role="user", content=body.text)] if body.text is not None else chat_messages(body.messages or [])
    check_ingest_size(ctx, sum(len(m.content) for m in messages))
    memory = ctx.memory

    def add() -> AddMemoryResponse:
        ids = memory.add(messages, session_id=key.session_id, user_id=key.user_id, metadata=body.metadata,
                         call="POST /v1/memories", ttl=body.ttl_seconds)
        return AddMemoryResponse(ids=ids, data=[memory.get(i, user_id=key.user_id) for i in ids])

    return await ctx.scheduler.run_exclusive(key, add)


@router.get("", response_model=MemoryList, summary="List your memories, with filters")
async def list_memories(
    session_id: Annotated[str | None, Query(description="only this session's")] = None,
    since: Annotated[datetime | None, Query(description="logged at or after (ISO 8601; naive is UTC)")] = None,
    until: Annotated[datetime | None, Query(description="logged before (ISO 8601; naive is UTC)")] = None,
    metadata: Annotated[str | None, Query(description='a JSON object the entries\' metadata must match, e.g. {"kind": "document"}')] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    ctx: ServerContext = Depends(context),
    who: Principal = Depends(principal),
) -> MemoryList:
    filters = _filters(metadata)
    items = await ctx.scheduler.run_io(
        lambda: ctx.memory.get_all(user_id=who.user_id, session_id=session_id, since=since, until=until,
                                   metadata=filters, limit=limit)
    )
    return MemoryList(data=items)


@router.get("/retention", response_model=RetentionPolicy, summary="Your retention policy (or the server's default)")
async def get_retention(ctx: ServerContext = Depends(context), who: Principal = Depends(principal)) -> RetentionPolicy:
    return await ctx.scheduler.run_io(lambda: ctx.memory.get_retention(who.user_id))


@router.put("/retention", response_model=RetentionPolicy, summary="Set how long your memories are kept")
async def set_retention(
    body: RetentionPolicy, ctx: ServerContext = Depends(context), who: Principal = Depends(principal)
) -> RetentionPolicy:
    """Both limits null: your memories are kept until deleted. Nothing is removed until a prune."""
    return await ctx.scheduler.run_io(lambda: ctx.memory.set_retention(who.user_id, body))


@router.post("/prune", response_model=PruneReport, summary="Remove your expired memories; states are rebuilt")
async def prune_memories(
    dry_run: Annotated[bool, Query(description="only report what would be removed")] = False,
    ctx: ServerContext = Depends(context), who: Principal = Depends(principal),
) -> PruneReport:
    """Entries past their TTL or your retention policy leave the log, and each affected session's
    state is re-derived from what remains (one atomic commit per session)."""
    return await ctx.scheduler.run_io(
        lambda: ctx.memory.prune(user_id=who.user_id, dry_run=dry_run)
    )


@router.get("/{memory_id}", response_model=MemoryItem, summary="One of your memories")
async def get_memory(memory_id: MemoryId, ctx: ServerContext = Depends(context), who: Principal = Depends(principal)) -> MemoryItem:
    return await _owned(ctx, who, memory_id)


@router.patch("/{memory_id}", response_model=MemoryItem, summary="Correct a memory; the session's state is re-derived")
async def update_memory(
    memory_id: MemoryId, body: UpdateMemoryRequest, ctx: ServerContext = Depends(context), who: Principal = Depends(principal)
) -> MemoryItem:
    item = await _owned(ctx, who, memory_id)
    check_ingest_size(ctx, len(body.text))
    return await ctx.scheduler.run_exclusive(
        _key(who, item),
        lambda: ctx.memory.update(item.id, body.text, user_id=who.user_id, call="PATCH /v1/memories/{id}"),
    )


@router.delete("/{memory_id}", response_model=MemoryDeleteResponse, summary="Forget a memory; the session's state is rebuilt")
async def delete_memory(
    memory_id: MemoryId, ctx: ServerContext = Depends(context), who: Principal = Depends(principal)
) -> MemoryDeleteResponse:
    item = await _owned(ctx, who, memory_id)
    report = await ctx.scheduler.run_exclusive(
        _key(who, item), lambda: ctx.memory.delete(item.id, user_id=who.user_id, call="DELETE /v1/memories/{id}")
    )
    return MemoryDeleteResponse(id=item.id, deleted=True, **report.model_dump())


@router.get("/{memory_id}/history", response_model=MemoryHistory, summary="Every change of a memory, oldest first")
async def memory_history(
    memory_id: MemoryId, ctx: ServerContext = Depends(context), who: Principal = Depends(principal)
) -> MemoryHistory:
    events = await ctx.scheduler.run_io(lambda: ctx.memory.history(memory_id, user_id=who.user_id))
    return MemoryHistory(id=events[0].memory_id if events else memory_id, events=events)


@router.post("/reset", response_model=ResetResponse, summary="Delete all of your memory: sessions, log and history")
async def reset_memories(ctx: ServerContext = Depends(context), who: Principal = Depends(principal)) -> ResetResponse:
    return await ctx.scheduler.run_io(lambda: ctx.memory.reset(user_id=who.user_id))
