"""Converting between LangChain messages and deltamem's `ChatMessage`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages import ChatMessage as LCChatMessage

from deltamem_agents.session import ChatMessage, parse_tool_calls
from deltamem_agents.session.tools import ToolCall

#: Content blocks that carry no text for the model and can be left out: tool calls are sent
#: through ``AIMessage.tool_calls``, reasoning is the provider's own business.
_SKIPPED_BLOCKS = frozenset({"tool_use", "tool_call", "tool_call_chunk", "reasoning", "thinking", "redacted_thinking"})
_ROLES = {
    "human": "user",
    "user": "user",
    "ai": "assistant",
    "assistant": "assistant",
    "system": "system",
    "developer": "system",
    "tool": "tool",
    "function": "tool",
}


def content_text(content: str | list[Any], *, where: str) -> str:
    """The text of a message's content: a string, or the text blocks of a block list.

    δ-mem backbones read text only, so images, audio and files raise instead of vanishing."""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict):
            kind = block.get("type")
            if kind == "text":
                parts.append(str(block.get("text", "")))
            elif kind not in _SKIPPED_BLOCKS:
                raise ValueError(
                    f"{where} has a {kind!r} content block; DeltaMemLLM reads text only "
                    "(send text, or describe the attachment in words)"
                )
        else:
            raise ValueError(f"{where} has a content block of type {type(block).__name__}; expected str or dict")
    return "".join(parts)


def to_chat_message(message: BaseMessage, *, index: int = 0) -> ChatMessage:
    """One LangChain message as the `ChatMessage` a session stores."""
    where = f"message {index} ({message.type})"
    text = content_text(message.content, where=where)
    name = message.name or None
    if isinstance(message, HumanMessage):
        return ChatMessage(role="user", content=text, name=name)
    if isinstance(message, SystemMessage):
        return ChatMessage(role="system", content=text, name=name)
    if isinstance(message, AIMessage):
        calls = [
            ToolCall.model_validate(
                {"name": call["name"], "arguments": call.get("args") or {}, **({"id": call["id"]} if call.get("id") else {})}
            ).to_openai()
            for call in message.tool_calls
        ]
        return ChatMessage(role="assistant", content=text, name=name, tool_calls=calls or None)
    if isinstance(message, ToolMessage):
        if message.status == "error" and not text.lower().startswith("error"):
            text = f"Error: {text}"
        return ChatMessage(role="tool", content=text, name=name, tool_call_id=message.tool_call_id)
    if isinstance(message, FunctionMessage):
        return ChatMessage(role="tool", content=text, name=message.name)
    if isinstance(message, LCChatMessage):
        role = _ROLES.get(message.role.lower())
        if role is None:
            raise ValueError(f"{where} has role {message.role!r}; use one of {sorted(_ROLES)}")
        return ChatMessage(role=role, content=text, name=name)  # type: ignore[arg-type]
    raise ValueError(f"{where}: DeltaMemLLM cannot read a {type(message).__name__}")


def to_chat_messages(messages: Sequence[BaseMessage]) -> list[ChatMessage]:
    return [to_chat_message(m, index=i) for i, m in enumerate(messages)]


def from_logged(role: str, text: str, metadata: dict[str, Any], *, call_ids: list[str] | None = None) -> BaseMessage:
    """A LangChain message from a text-log entry (its role, verbatim text and metadata).

    Assistant entries hold their tool calls as ``<tool_call>`` markup (as the model read them);
    they come back as ``AIMessage.tool_calls``, with ``call_ids`` (from the tool results that
    follow) as their ids where known."""
    name = metadata.get("name") or None
    if role == "user":
        return HumanMessage(content=text, name=name)
    if role == "system":
        return SystemMessage(content=text, name=name)
    if role == "tool":
        return ToolMessage(content=text, tool_call_id=str(metadata.get("tool_call_id") or ""), name=name)
    if role == "assistant":
        visible, calls = parse_tool_calls(text)
        ids = list(call_ids or [])
        tool_calls = [
            {"name": c.name, "args": c.arguments, "id": ids[i] if i < len(ids) else c.id, "type": "tool_call"}
            for i, c in enumerate(calls)
        ]
        return AIMessage(content=visible, tool_calls=tool_calls, name=name)
    raise ValueError(f"a text-log entry with role {role!r} is not a chat message")


def args_json(arguments: dict[str, Any]) -> str:
    return json.dumps(arguments, ensure_ascii=False)
