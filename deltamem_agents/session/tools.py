"""Tool calling for backbones whose chat template knows nothing about tools.

Small instruct models (the embedded SmolLM2 among them) have a plain ChatML template. So tools
are described in a system note, and the model is asked to answer with the widely used
``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` blocks (the format Qwen, Hermes
and SmolLM3 are trained on). Replies are parsed back into `ToolCall` objects. Tool results go
back as ``role="tool"`` messages. The same format works for every backbone, and it renders
incrementally, so sessions can keep reusing their KV cache.

Frameworks (LangChain, LlamaIndex, the OpenAI-compatible server) convert their own tool
schemas with `as_tool_spec` and read `ToolCall.to_openai()`.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deltamem_agents.errors import UserError

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
_BLOCK = re.compile(re.escape(TOOL_CALL_OPEN) + r"\s*(.*?)\s*(?:" + re.escape(TOOL_CALL_CLOSE) + r"|$)", re.DOTALL)
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")


class ToolSpecError(UserError, ValueError):
    """A tool definition that cannot be shown to the model (the message names the tool)."""


class ToolSpec(BaseModel):
    """One callable tool: a name, what it does, and a JSON schema of its arguments."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ToolCall(BaseModel):
    """A call the model asked for; ``id`` pairs it with the tool message that answers it."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI chat format, which `ChatMessage.tool_calls` stores."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": json.dumps(self.arguments, ensure_ascii=False)},
        }

    @classmethod
    def from_openai(cls, call: Mapping[str, Any]) -> ToolCall:
        """Read an OpenAI-format call (``function.arguments`` a JSON string) or a flat one."""
        function = call.get("function", call)
        arguments = function.get("arguments", function.get("args", {}))
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                raise ToolSpecError(f"tool call {function.get('name')!r} has arguments that are not JSON: {exc}") from exc
        fields: dict[str, Any] = {"name": function.get("name"), "arguments": arguments}
        if call.get("id"):
            fields["id"] = call["id"]
        return cls.model_validate(fields)


def as_tool_spec(tool: ToolSpec | Mapping[str, Any]) -> ToolSpec:
    """Accept a `ToolSpec`, an OpenAI tool (``{"type": "function", "function": {...}}``) or a
    bare function schema (``{"name", "description", "parameters"}``)."""
    if isinstance(tool, ToolSpec):
        return tool
    if not isinstance(tool, Mapping):
        raise ToolSpecError(f"a tool must be a ToolSpec or an OpenAI-style dict, got {type(tool).__name__}")
    function = tool.get("function", tool)
    try:
        return ToolSpec(
            name=function.get("name"),
            description=function.get("description") or "",
            parameters=dict(function.get("parameters") or {"type": "object", "properties": {}}),
        )
    except ValidationError as exc:
        raise ToolSpecError(f"invalid tool {function.get('name')!r}: {exc.errors()[0]['msg']}") from exc


def render_tools_prompt(tools: Sequence[ToolSpec | Mapping[str, Any]], *, required: str | None = None) -> str:
    """The system note that shows the tools to the model and says how to call them.

    ``required``: ``"any"`` asks for at least one call, a tool name asks for that tool."""
    specs = [as_tool_spec(t) for t in tools]
    if not specs:
        raise ToolSpecError("no tools to describe")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ToolSpecError(f"tool names must be unique, got {names}")
    lines = [
        "You can call these tools. Each is given as a JSON schema:",
        "<tools>",
        *(json.dumps(s.model_dump(), ensure_ascii=False, sort_keys=True) for s in specs),
        "</tools>",
        "To call a tool, answer with one block per call, exactly like this:",
        f'{TOOL_CALL_OPEN}{{"name": "<tool name>", "arguments": {{<arguments as JSON>}}}}{TOOL_CALL_CLOSE}',
        "Tool results come back in a message from the tool. Answer normally when no tool is needed.",
    ]
    if required == "any":
        lines.append("You must call at least one tool now.")
    elif required:
        if required not in names:
            raise ToolSpecError(f"tool_choice names {required!r}, which is not among the tools {names}")
        lines.append(f"You must call the tool {required!r} now.")
    return "\n".join(lines)


def format_tool_calls(calls: Sequence[ToolCall | Mapping[str, Any]]) -> str:
    """How an assistant turn with tool calls reads in the context (the format the model writes)."""
    blocks = []
    for call in calls:
        call = call if isinstance(call, ToolCall) else ToolCall.from_openai(call)
        payload = json.dumps({"name": call.name, "arguments": call.arguments}, ensure_ascii=False)
        blocks.append(f"{TOOL_CALL_OPEN}{payload}{TOOL_CALL_CLOSE}")
    return "\n".join(blocks)


def parse_tool_calls(text: str, *, known: Sequence[str] | None = None) -> tuple[str, list[ToolCall]]:
    """Split a reply into its plain text and the tool calls it contains.

    A block that is not a JSON object with a string ``name`` (or names a tool not in ``known``)
    stays in the text, so nothing the model wrote is lost silently."""
    calls: list[ToolCall] = []
    kept: list[str] = []
    position = 0
    for match in _BLOCK.finditer(text):
        call = _parse_block(match.group(1), known)
        if call is None:
            continue
        kept.append(text[position : match.start()])
        position = match.end()
        calls.append(call)
    kept.append(text[position:])
    return "".join(kept).strip() if calls else text, calls


def _parse_block(body: str, known: Sequence[str] | None) -> ToolCall | None:
    body = _FENCE.sub("", body.strip())
    try:
        payload = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
        return None
    arguments = payload.get("arguments", payload.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict) or (known is not None and payload["name"] not in known):
        return None
    return ToolCall(name=payload["name"], arguments=arguments)


def tool_call_prefix_length(text: str) -> int:
    """How many trailing characters of ``text`` may begin a tool call block (held back while
    streaming, so no markup reaches the user); the whole tail from an opened block on."""
    opened = text.find(TOOL_CALL_OPEN)
    if opened >= 0:
        return len(text) - opened
    for size in range(min(len(TOOL_CALL_OPEN) - 1, len(text)), 0, -1):
        if text.endswith(TOOL_CALL_OPEN[:size]):
            return size
    return 0


class VisibleText:
    """What a streamed answer shows its reader: with tools, tool-call markup is held back
    (`tool_call_prefix_length`) and the plain text released once it cannot start a call; the
    single place `MemorySession.stream` and the batched decoders share for it."""

    def __init__(self, *, tools: bool, prefix: str = "") -> None:
        self.tools = tools
        self._text = prefix
        self._shown = 0 if tools else len(prefix)

    def start(self) -> str:
        """The text to show before any token: the response prefix, when it cannot hold a call."""
        return "" if self.tools else self._text

    def push(self, piece: str) -> str:
        """A decoded piece; the text that may be shown now."""
        self._text += piece
        if not self.tools:
            self._shown = len(self._text)
            return piece
        visible = len(self._text) - tool_call_prefix_length(self._text)
        if visible <= self._shown:
            return ""
        out, self._shown = self._text[self._shown : visible], visible
        return out

    def finish(self, content: str) -> str:
        """At the end of an answer that made no call: the rest of ``content`` that was held
        back as a possible call but was not one."""
        if not self.tools or len(content) <= self._shown:
            return ""
        out, self._shown = content[self._shown :], len(content)
        return out


def normalize_tool_choice(
    choice: object, names: Sequence[str], *, name_single_tool: bool = False, source: str = "tools"
) -> str | None:
    """Every ``tool_choice`` form a face accepts -> the session's: ``None`` (the model decides),
    ``"none"`` (show no tools this turn), ``"any"`` (call one) or a tool's name (call that one).

    Accepted: ``None``/``False``/``"auto"``; ``"none"``; ``True``/``"any"``/``"required"``; a
    tool name; ``{"type": "function", "function": {"name": ...}}`` or ``{"name": ...}`` (also as
    a pydantic model). ``names`` are the tools of the call; a name outside them is refused, as is
    a demand for a call without tools. ``name_single_tool``: with one tool, ``"any"`` asks for
    it by name (LangChain's rule). ``source`` names the tools in error messages."""
    if choice is None or choice is False or choice == "auto":
        return None
    if choice == "none":
        return "none"
    if isinstance(choice, BaseModel):
        choice = choice.model_dump()
    if choice is True or choice in ("any", "required"):
        wanted = "any"
    elif isinstance(choice, Mapping):
        function = choice.get("function") or {}
        wanted = (function.get("name") if isinstance(function, Mapping) else None) or choice.get("name")
        if not isinstance(wanted, str) or not wanted:
            raise ToolSpecError(
                f"tool_choice {choice!r} names no tool; use {{'type': 'function', 'function': {{'name': ...}}}}"
            )
    elif isinstance(choice, str):
        wanted = choice
    else:
        raise ToolSpecError(
            f"tool_choice must be None, 'auto', 'none', 'any', 'required', True, a tool name or "
            f"{{'type': 'function', 'function': {{'name': ...}}}}, got {choice!r}"
        )
    if not names:
        raise ToolSpecError("tool_choice needs tools: send tools, or drop tool_choice")
    if wanted == "any":
        return names[0] if name_single_tool and len(names) == 1 else "any"
    if wanted not in names:
        raise ToolSpecError(f"tool_choice {wanted!r} is not among the {source} {list(names)}")
    return wanted


def forced_call_prefix(specs: Sequence[ToolSpec], tool_choice: str | None) -> str:
    """With a required tool choice, the answer is made to start as a call: small models often
    will not begin one themselves, and once begun they complete it."""
    if not specs or tool_choice is None:
        return ""
    if tool_choice == "any":
        return TOOL_CALL_OPEN + '{"name": "'
    return TOOL_CALL_OPEN + json.dumps({"name": tool_choice})[:-1] + ', "arguments": '


__all__ = [
    "TOOL_CALL_CLOSE",
    "TOOL_CALL_OPEN",
    "ToolCall",
    "ToolSpec",
    "ToolSpecError",
    "VisibleText",
    "as_tool_spec",
    "forced_call_prefix",
    "format_tool_calls",
    "normalize_tool_choice",
    "parse_tool_calls",
    "render_tools_prompt",
    "tool_call_prefix_length",
]
