"""Between OpenAI's chat format and the library's: messages in, replies and chunks out.

Everything a request can get wrong about its conversation is found here, before any session is
opened or created, and raised as a 400 that names the message at fault.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from pydantic import ValidationError

from deltamem_agents.memory.hybrid import HybridReply
from deltamem_agents.server.errors import APIError
from deltamem_agents.server.schemas import (
    AssistantMessage,
    AssistantMessageIn,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    FunctionCall,
    MessageIn,
    ToolCallDelta,
    ToolCallOut,
    TurnInfo,
    UsageOut,
)
from deltamem_agents.session.session import GenerationOptions
from deltamem_agents.session.tools import ToolSpecError, normalize_tool_choice
from deltamem_agents.store.records import ChatMessage

MAX_STOP_STRINGS = 4


def _bad(message: str, param: str, code: str = "invalid_value") -> APIError:
    return APIError(400, message, code=code, param=param)


def message_text(message: MessageIn, index: int) -> str:
    """The text of a message; content parts must all be text."""
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        if part.type == "text" and part.text is None:
            raise _bad(f"messages[{index}] has a text content part without its text", f"messages.{index}.content")
        if part.type != "text" or part.text is None:
            raise _bad(
                f"messages[{index}] has a {part.type!r} content part: this server reads text only; "
                "send the text as a string or as {\"type\": \"text\", \"text\": ...} parts",
                f"messages.{index}.content", "unsupported_content",
            )
        texts.append(part.text)
    return "".join(texts)


def to_chat_messages(messages: list[MessageIn]) -> list[ChatMessage]:
    """OpenAI messages -> `ChatMessage`s, refusing empty ones; the last must be a user's or a tool's."""
    out: list[ChatMessage] = []
    for index, message in enumerate(messages):
        text = message_text(message, index)
        role = "system" if message.role == "developer" else message.role
        calls = None
        if isinstance(message, AssistantMessageIn) and message.tool_calls:
            calls = []
            for number, call in enumerate(message.tool_calls):
                arguments = call.function.arguments
                try:
                    if arguments.strip():
                        json.loads(arguments)
                except json.JSONDecodeError:
                    raise _bad(
                        f"messages[{index}].tool_calls[{number}].function.arguments is not valid JSON",
                        f"messages.{index}.tool_calls.{number}.function.arguments",
                    ) from None
                calls.append(
                    {"id": call.id or f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                     "function": {"name": call.function.name, "arguments": arguments}}
                )
        if not text.strip() and not calls:
            raise _bad(
                f"messages[{index}] ({message.role}) is empty: every message needs text"
                + (" or tool_calls" if role == "assistant" else ""),
                f"messages.{index}.content", "empty_message",
            )
        out.append(
            ChatMessage(
                role=role, content=text, name=getattr(message, "name", None),
                tool_call_id=getattr(message, "tool_call_id", None), tool_calls=calls,
            )
        )
    if out[-1].role not in ("user", "tool"):
        raise _bad(
            f"the last message is from the {messages[-1].role}; end the conversation with a user (or tool) "
            "message for the model to answer", f"messages.{len(out) - 1}.role", "invalid_conversation",
        )
    return out


def generation_options(body: ChatCompletionRequest, *, default_max_tokens: int, max_tokens: int) -> dict[str, Any]:
    """The request's decoding options as `GenerationOptions` fields (only those it sets)."""
    if body.n not in (None, 1):
        raise _bad("n > 1 is not supported: send one request per answer", "n")
    if body.logprobs:
        raise _bad("logprobs are not supported by this server; leave logprobs unset or false", "logprobs")
    if body.max_tokens is not None and body.max_completion_tokens is not None and body.max_tokens != body.max_completion_tokens:
        raise _bad("max_tokens and max_completion_tokens differ; send one of them", "max_tokens")
    wanted = body.max_completion_tokens or body.max_tokens or default_max_tokens
    if wanted > max_tokens:
        param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        raise _bad(
            f"{param}={wanted} is more than this server allows ({max_tokens}); ask for fewer tokens, or start "
            "the server with a larger --max-tokens", param, "max_tokens_too_large",
        )
    options: dict[str, Any] = {"max_new_tokens": wanted}
    if body.temperature is not None:
        options["temperature"] = body.temperature
    if body.top_p is not None:
        options["top_p"] = body.top_p
    if body.seed is not None:
        options["seed"] = body.seed
    if body.stop is not None:
        stops = [body.stop] if isinstance(body.stop, str) else list(body.stop)
        if len(stops) > MAX_STOP_STRINGS or any(not s for s in stops):
            raise _bad(f"stop takes 1 to {MAX_STOP_STRINGS} non-empty strings", "stop")
        options["stop"] = tuple(stops)
    try:
        GenerationOptions(**options)
    except ValidationError as exc:
        raise _bad(f"invalid generation options: {exc.errors()[0]['msg']}", "body") from None
    return options


def tools_and_choice(body: ChatCompletionRequest) -> tuple[list[dict[str, Any]] | None, str | None]:
    """The tools to describe to the model and the library's ``tool_choice`` (``"any"`` or a name),
    read by the library's one rule (`normalize_tool_choice`)."""
    names = [tool.function.name for tool in body.tools or ()]
    try:
        choice = normalize_tool_choice(body.tool_choice, names)
    except ToolSpecError as exc:
        raise _bad(str(exc), "tool_choice") from None
    if not names or choice == "none":
        return None, None
    return [tool.model_dump() for tool in body.tools or ()], choice


# -- responses -----------------------------------------------------------------------------------------------
def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def turn_info(reply: HybridReply) -> TurnInfo:
    stats = reply.stats
    decision = reply.decision
    stateless = not reply.session_id
    return TurnInfo(
        session_id=None if stateless else reply.session_id,
        user_id=reply.user_id,
        turn=None if stateless else reply.turn,
        route=decision.route if decision else None,
        route_reason=decision.reason if decision else None,
        retrieved_ids=list(decision.retrieved_ids) if decision else [],
        state_confidence=reply.state_confidence,
        tokens_written=stats.tokens_written if not stateless else 0,
        prefill_ms=round(stats.prefill_ms, 3),
        decode_ms=round(stats.decode_ms, 3),
    )


def usage_of(reply: HybridReply) -> UsageOut:
    usage = reply.usage
    return UsageOut(
        prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens, total_tokens=usage.total_tokens
    )


def _tool_calls(reply: HybridReply) -> list[ToolCallOut]:
    out = []
    for call in reply.tool_calls:
        openai = call.to_openai()
        out.append(ToolCallOut(id=openai["id"], function=FunctionCall(**openai["function"])))
    return out


def completion(reply: HybridReply, *, id: str, model: str, fingerprint: str) -> ChatCompletion:
    calls = _tool_calls(reply)
    content = reply.text if reply.text or not calls else None
    return ChatCompletion(
        id=id, created=now(), model=model, system_fingerprint=fingerprint,
        choices=[Choice(message=AssistantMessage(content=content, tool_calls=calls or None), finish_reason=reply.finish_reason)],
        usage=usage_of(reply), deltamem=turn_info(reply),
    )


def chunk(id: str, model: str, fingerprint: str, delta: Delta, **fields: Any) -> ChatCompletionChunk:
    return ChatCompletionChunk(
        id=id, created=now(), model=model, system_fingerprint=fingerprint,
        choices=[ChunkChoice(delta=delta, finish_reason=fields.pop("finish_reason", None))], **fields,
    )


def final_chunks(reply: HybridReply, *, id: str, model: str, fingerprint: str, include_usage: bool) -> list[ChatCompletionChunk]:
    """The tool calls (if any), the finish reason with the ``deltamem`` extension, and the usage."""
    out = []
    calls = _tool_calls(reply)
    if calls:
        deltas = [ToolCallDelta(index=i, id=c.id, function=c.function) for i, c in enumerate(calls)]
        out.append(chunk(id, model, fingerprint, Delta(tool_calls=deltas)))
    out.append(chunk(id, model, fingerprint, Delta(), finish_reason=reply.finish_reason, deltamem=turn_info(reply)))
    if include_usage:
        out.append(
            ChatCompletionChunk(id=id, created=now(), model=model, system_fingerprint=fingerprint, choices=[], usage=usage_of(reply))
        )
    return out


__all__ = [
    "completion",
    "completion_id",
    "chunk",
    "final_chunks",
    "generation_options",
    "to_chat_messages",
    "tools_and_choice",
    "turn_info",
]
