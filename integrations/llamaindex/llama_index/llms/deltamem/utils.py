"""Conversions between LlamaIndex and deltamem-agents, shared by `DeltaMemLLM` and `DeltaMemMemory`.

LlamaIndex components are stateless towards their LLM: an agent sends its system prompt, the
history its memory returns and its scratchpad on every call. A δ-mem session must write each
message once. The rule that finds what a session has not seen yet is the SDK's own
(`deltamem_agents.session.unseen_messages`), shared with LangChain and the server.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from llama_index.core.base.llms.types import (
    CachePoint,
    ChatMessage,
    MessageRole,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)

from deltamem_agents.memory.hybrid import HybridMemory, HybridReply
from deltamem_agents.memory.shared import shared_memory, shared_runtime
from deltamem_agents.session import ChatMessage as DeltaMemMessage
from deltamem_agents.session import ToolCall
from deltamem_agents.session.tools import TOOL_CALL_OPEN, parse_tool_calls

#: The session a `DeltaMemLLM` and a `DeltaMemMemory` share when none is named.
DEFAULT_SESSION_ID = "llamaindex"

_ROLES: dict[MessageRole, str] = {
    MessageRole.SYSTEM: "system",
    MessageRole.DEVELOPER: "system",
    MessageRole.USER: "user",
    MessageRole.ASSISTANT: "assistant",
    MessageRole.CHATBOT: "assistant",
    MessageRole.MODEL: "assistant",
    MessageRole.TOOL: "tool",
    MessageRole.FUNCTION: "tool",
}
# Blocks that carry nothing the model should read again: reasoning traces and cache markers.
_SKIPPED_BLOCKS = (ThinkingBlock, CachePoint)


def to_deltamem(message: ChatMessage) -> DeltaMemMessage:
    """A LlamaIndex message as a deltamem `ChatMessage` (text, tool calls and tool results).

    Tool calls are read from `ToolCallBlock`s and from the OpenAI-style
    ``additional_kwargs["tool_calls"]`` that older integrations write."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.blocks:
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ToolCallBlock):
            calls.append(_openai_call(block.tool_call_id, block.tool_name, block.tool_kwargs))
        elif not isinstance(block, _SKIPPED_BLOCKS):
            raise ValueError(
                f"deltamem models read text only: a {message.role.value} message holds a "
                f"{type(block).__name__}; turn it into text (e.g. a caption or an extract) before sending it"
            )
    for call in message.additional_kwargs.get("tool_calls") or ():
        calls.append(_legacy_call(call))
    extra = message.additional_kwargs
    role = _ROLES[message.role]
    return DeltaMemMessage(
        role=role,
        content="\n".join(texts),
        name=extra.get("name") if role == "tool" else None,
        tool_call_id=extra.get("tool_call_id") if role == "tool" else None,
        tool_calls=calls or None,
    )


def to_llama(message: DeltaMemMessage) -> ChatMessage:
    """A deltamem message as LlamaIndex shows it: tool calls as `ToolCallBlock`s, and an
    assistant's text without the ``<tool_call>`` markup the model wrote."""
    content = message.content
    blocks: list[Any] = []
    calls = [ToolCall.from_openai(c) for c in message.tool_calls or ()]
    if message.role == "assistant" and TOOL_CALL_OPEN in content:
        content, parsed = parse_tool_calls(content)
        calls = calls or parsed
    if content or not calls:
        blocks.append(TextBlock(text=content))
    blocks.extend(ToolCallBlock(tool_call_id=c.id, tool_name=c.name, tool_kwargs=c.arguments) for c in calls)
    extra: dict[str, Any] = {}
    if message.tool_call_id:
        extra["tool_call_id"] = message.tool_call_id
    if message.name:
        extra["name"] = message.name
    return ChatMessage(role=MessageRole(message.role), blocks=blocks, additional_kwargs=extra)


def reply_message(reply: HybridReply) -> ChatMessage:
    """The assistant message of a reply: its text and one `ToolCallBlock` per call."""
    blocks: list[Any] = []
    if reply.text or not reply.tool_calls:
        blocks.append(TextBlock(text=reply.text))
    blocks.extend(ToolCallBlock(tool_call_id=c.id, tool_name=c.name, tool_kwargs=c.arguments) for c in reply.tool_calls)
    return ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks)


def reply_raw(reply: HybridReply) -> dict[str, Any]:
    """``ChatResponse.raw``: the reply's metadata (session, route, stats) and OpenAI-style usage,
    which LlamaIndex's token counting reads."""
    usage = {
        "prompt_tokens": reply.usage.prompt_tokens,
        "completion_tokens": reply.usage.completion_tokens,
        "total_tokens": reply.usage.total_tokens,
    }
    return {**reply.metadata(), "usage": usage}


def _openai_call(call_id: str | None, name: str, arguments: Mapping[str, Any] | str) -> dict[str, Any]:
    if isinstance(arguments, str):
        text = arguments
    else:
        text = json.dumps(dict(arguments), ensure_ascii=False)
    call: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": text}}
    if call_id:
        call["id"] = call_id
    return ToolCall.from_openai(call).to_openai()


def _legacy_call(call: Any) -> dict[str, Any]:
    if not isinstance(call, Mapping):
        dump = getattr(call, "model_dump", None)
        if dump is None:
            raise ValueError(f"cannot read a tool call of type {type(call).__name__}; pass OpenAI-style dicts")
        call = dump()
    function = call.get("function", call)
    return _openai_call(call.get("id"), function.get("name"), function.get("arguments") or {})


def session_messages(hybrid: HybridMemory, *, session_id: str, user_id: str) -> list[DeltaMemMessage]:
    """The committed-or-open conversation of a session (empty if it does not exist yet; nothing is created)."""
    from deltamem_agents.session import SessionKey

    runtime = hybrid.runtime
    key = SessionKey(user_id=user_id, session_id=session_id)
    with runtime.store.lock(key):
        if not runtime.store.exists(key):
            return []
        return list(runtime.session(session_id, user_id=user_id).messages)


# -- one HybridMemory per configuration ------------------------------------------------------------------
def shared_hybrid(
    *,
    backbone: str | None,
    adapter: str | None,
    store_path: str | None,
    device: str | None,
    dtype: str | None,
    text_log: bool,
) -> HybridMemory:
    """The process-wide `HybridMemory` for a configuration (the library's shared cache,
    `deltamem_agents.memory.shared`, also LangChain's), so that an LLM and a memory built from
    the same settings share one backbone, one session store and one text log."""
    runtime = shared_runtime(backbone, adapter=adapter, store=store_path, device=device, dtype=dtype)
    return shared_memory(runtime, hybrid=text_log)


def without_notes(messages: Iterable[DeltaMemMessage]) -> list[DeltaMemMessage]:
    """A session's conversation as a client sees it: no system prompts, no per-turn notes."""
    return [m for m in messages if m.role != "system"]
