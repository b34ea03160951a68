"""``POST /v1/chat/completions``: OpenAI's chat API, with memory per session.

The session comes from the ``X-Session-Id`` header or the request's ``user`` field (the same
value if both are sent); without either the request is stateless. A streamed answer opens its
event stream only once the turn has produced its first chunk, so everything that can be wrong
with the request is still answered with a 4xx status.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Header
from fastapi.responses import JSONResponse, StreamingResponse

from deltamem_agents.memory.hybrid import HybridChunk, HybridReply
from deltamem_agents.server import openai_format as fmt
from deltamem_agents.server.auth import Principal, principal
from deltamem_agents.server.context import ServerContext, context
from deltamem_agents.server.errors import (
    ERROR_RESPONSES,
    APIError,
    as_api_error,
    error_event,
)
from deltamem_agents.server.scheduler import TurnRequest, TurnStream
from deltamem_agents.server.schemas import (
    SESSION_ID_SCHEMA,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Delta,
)
from deltamem_agents.store.records import SessionKey

logger = logging.getLogger(__name__)
router = APIRouter(tags=["chat"], responses=ERROR_RESPONSES)

SESSION_HEADER = "X-Session-Id"
SSE_EVENT_SCHEMA = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "event": {"type": "string"},
        "data": {"type": "string", "description": "a `ChatCompletionChunk` as JSON, or `[DONE]` after the last one"},
        "id": {"type": "string"},
        "retry": {"type": "integer"},
    },
}
STREAM_DOC = {
    200: {
        "description": "the answer; with `stream: true` a text/event-stream of `ChatCompletionChunk`s ending in `data: [DONE]`",
        # OpenAPI before 3.2: the schema of a text/event-stream describes one event
        "content": {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}},
    }
}


def session_key(who: Principal, header: str | None, user_field: str | None) -> SessionKey | None:
    """The request's session (scoped to the caller's user), or None: stateless."""
    if header is not None and user_field is not None and header != user_field:
        raise APIError(
            400, f"the {SESSION_HEADER} header ({header!r}) and the user field ({user_field!r}) name different "
            "sessions; send one of them", code="session_conflict", param="user",
        )
    session_id = header if header is not None else user_field
    if session_id is None:
        return None
    return SessionKey(user_id=who.user_id, session_id=session_id)  # InvalidSessionIdError -> 400


@router.post("/v1/chat/completions", response_model=ChatCompletion, responses=STREAM_DOC, summary="Chat completion")
async def create_chat_completion(
    body: ChatCompletionRequest,
    ctx: ServerContext = Depends(context),
    who: Principal = Depends(principal),
    x_session_id: str | None = Header(
        None, alias=SESSION_HEADER, description="the session; overrides `user`", json_schema_extra=SESSION_ID_SCHEMA
    ),
) -> JSONResponse | StreamingResponse:
    settings = ctx.settings
    if body.model != settings.model_name:
        raise APIError(
            404, f"model {body.model!r} is not served here; use {settings.model_name!r} (see GET /v1/models)",
            code="model_not_found", param="model",
        )
    messages = fmt.to_chat_messages(body.messages)
    generation = fmt.generation_options(body, default_max_tokens=settings.default_max_tokens, max_tokens=settings.max_tokens)
    tools, tool_choice = fmt.tools_and_choice(body)
    key = session_key(who, x_session_id, body.user)
    turn = TurnRequest(
        messages=messages, user_id=who.user_id, key=key, tools=tools, tool_choice=tool_choice, generation=generation
    )
    stream = await ctx.scheduler.start_turn(turn)
    headers = {SESSION_HEADER: key.session_id} if key is not None else {}
    completion_id = fmt.completion_id()
    try:
        if not body.stream:
            reply = await stream.reply()
            result = fmt.completion(reply, id=completion_id, model=settings.model_name, fingerprint=ctx.fingerprint)
            return JSONResponse(result.model_dump(mode="json"), headers=headers)
        first = await stream.next()  # errors up to here are still HTTP statuses
    except BaseException:
        stream.cancel()
        raise
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    events = _events(stream, first, completion_id, settings.model_name, ctx.fingerprint, include_usage)
    return StreamingResponse(events, media_type="text/event-stream", headers={**headers, "Cache-Control": "no-cache"})


def _sse(payload: object) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"data: {data}\n\n"


def _chunk_json(chunk: ChatCompletionChunk) -> dict[str, object]:
    """A chunk as OpenAI sends it: empty delta fields and unused extensions left out,
    ``finish_reason`` always present (null until the last chunk)."""
    data = chunk.model_dump(mode="json")
    for name in ("usage", "deltamem"):
        if data[name] is None:
            del data[name]
    for choice in data["choices"]:
        choice["delta"] = {k: v for k, v in choice["delta"].items() if v is not None}
    return data


async def _events(
    stream: TurnStream, first: HybridChunk | None, id: str, model: str, fingerprint: str, include_usage: bool
) -> AsyncIterator[str]:
    """The server-sent events of one streamed turn; an error after the stream opened is sent as
    an ``{"error": ...}`` event (the status line is gone by then)."""
    try:
        yield _sse(_chunk_json(fmt.chunk(id, model, fingerprint, Delta(role="assistant", content=""))))
        item, reply = first, None
        while item is not None:
            if item.reply is not None:
                reply = item.reply
            elif item.text:
                yield _sse(_chunk_json(fmt.chunk(id, model, fingerprint, Delta(content=item.text))))
            item = await stream.next()
        assert isinstance(reply, HybridReply)
        for final in fmt.final_chunks(reply, id=id, model=model, fingerprint=fingerprint, include_usage=include_usage):
            yield _sse(_chunk_json(final))
        yield _sse("[DONE]")
    except Exception as exc:  # noqa: BLE001 - reported to the client as the stream's last event
        known = as_api_error(exc)
        if known is None or known.status >= 500:
            logger.error("streamed turn failed", exc_info=exc)
        yield _sse(error_event(exc))
    finally:
        stream.cancel()  # a client that went away abandons the turn: it commits nothing
