"""Chat messages: what the chat template sees of them, which of them a session has not seen yet,
and their token ids with SSW segment ids, rendered by the backbone's chat template.

Sessions feed the model one message at a time, so the template is rendered incrementally: the
tokens of message ``i`` are the text that ``messages[: i + 1]`` adds to the rendering of
``messages[: i]``. Each message's tokens carry its segment id (one id per message, or one per
sentence of its content); system messages and the generation prompt carry -1 (not written),
as in the reference implementation.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from deltamem_agents.errors import UserError
from deltamem_agents.session.tools import TOOL_CALL_OPEN, format_tool_calls, parse_tool_calls
from deltamem_agents.store.records import ChatMessage

SENTENCE_BOUNDARY = re.compile(r"\n{2,}|(?<=[.!?;:])[\"')\]\u201d\u2019]*\s+")
NOT_WRITTEN = -1

MessageLike = ChatMessage | dict[str, Any]


#: ``ChatMessage.metadata["kind"]`` of the system notes a session adds for one turn (tool
#: descriptions, retrieved snippets): context only, never written into the state, and not part
#: of the conversation a client sends back.
NOTE_KINDS = frozenset({"tools", "retrieved"})


class SessionError(UserError, ValueError):
    """Bad input to a session (empty message, unknown role...)."""


def as_message(message: MessageLike) -> ChatMessage:
    if isinstance(message, ChatMessage):
        return message
    if isinstance(message, dict):
        return ChatMessage.model_validate(message)
    raise SessionError(f"a message must be a ChatMessage or a dict, got {type(message).__name__}")


def template_view(message: ChatMessage) -> dict[str, Any]:
    """What the chat template sees of a message. Tool calls are written into the content in
    the format the model is asked to use (see `tools`), whatever the template knows of tools."""
    content = message.content
    if message.tool_calls and TOOL_CALL_OPEN not in content:
        calls = format_tool_calls(message.tool_calls)
        content = f"{content}\n{calls}" if content.strip() else calls
    view: dict[str, Any] = {"role": message.role, "content": content}
    for key in ("name", "tool_call_id"):
        value = getattr(message, key, None)
        if value:
            view[key] = value
    return view


def is_note(message: ChatMessage) -> bool:
    """A system note added for one turn (tools, retrieved snippets), not said by anyone."""
    return message.role == "system" and message.metadata.get("kind") in NOTE_KINDS


def conversation_key(message: ChatMessage) -> tuple[Any, ...]:
    """What makes two messages "the same message" when a client sends the conversation back:
    role, visible text, and for a tool result the call it answers. Timestamps, metadata and the
    tool-call markup the model wrote do not count, and neither do an assistant's tool calls: an
    agent that keeps only the first of several calls sends the same turn back with fewer calls."""
    content = message.content
    if message.role == "assistant" and TOOL_CALL_OPEN in content:
        content = parse_tool_calls(content)[0]
    return (message.role, " ".join(content.split()), message.tool_call_id if message.role == "tool" else None)


class ConversationForkError(SessionError):
    """A conversation that rewinds a session (e.g. a retry from an earlier point): it cannot be
    appended without writing messages twice, and a δ-mem state cannot be rewound."""


def unseen_messages(said: Sequence[ChatMessage], conversation: Sequence[MessageLike]) -> list[ChatMessage]:
    """The messages of ``conversation`` that a session whose messages are ``said`` has not seen.

    Clients send only the new messages, or the whole conversation each time, or (chains with a
    memory window, agents) a system prompt plus the latest part of the conversation. So:

    - a system message is seen if the session has one with the same text, wherever it stands;
    - the other messages are cut after the last place where they repeat the session's last two
      messages (normally the last question and its answer); what follows is new;
    - when they do not repeat them at all, all of them are new, unless their first two messages
      are two consecutive messages from earlier in the session: that conversation goes back to
      an earlier point, and `ConversationForkError` says so instead of writing it twice.

    New system messages come first in the result, then the other new messages in order.
    """
    incoming = [as_message(m) for m in conversation]
    seen_systems = {m.content.strip() for m in said if m.role == "system" and not is_note(m)}
    spoken = [conversation_key(m) for m in said if m.role != "system"]
    rest = [m for m in incoming if m.role != "system"]
    keys = [conversation_key(m) for m in rest]
    start = 0
    if spoken:
        ends = (e for e in range(len(keys) - 1, -1, -1) if keys[e] == spoken[-1])
        cut = next((e for e in ends if e == 0 or len(spoken) < 2 or keys[e - 1] == spoken[-2]), None)
        if cut is not None:
            start = cut + 1
        elif len(keys) >= 2:
            fork = next((i for i in range(len(spoken) - 1) if spoken[i : i + 2] == keys[:2]), None)
            if fork is not None:
                raise ConversationForkError(
                    f"the conversation sent goes back to an earlier point of the session (its first messages are "
                    f"messages {fork + 1}-{fork + 2} of {len(spoken)}, but it does not continue from the session's "
                    "end), and a δ-mem session only grows. Send the conversation up to its latest message, or only "
                    "the new messages, or use another session_id"
                )
    systems: list[ChatMessage] = []
    for message in incoming:
        text = message.content.strip()
        if message.role == "system" and not is_note(message) and text not in seen_systems:
            seen_systems.add(text)
            systems.append(message)
    return [*systems, *rest[start:]]


class ChatTemplateError(UserError, ValueError):
    """The backbone's chat template cannot be rendered incrementally."""


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of ``text`` (boundaries stay with the sentence before)."""
    spans, start = [], 0
    for match in SENTENCE_BOUNDARY.finditer(text):
        if match.end() > start:
            spans.append((start, match.end()))
            start = match.end()
    if start < len(text):
        spans.append((start, len(text)))
    return spans


@dataclass
class Encoded:
    """Tokens to feed, with one segment id per token."""

    ids: list[int] = field(default_factory=list)
    segment_ids: list[int] = field(default_factory=list)
    text: str = ""
    #: per token: may it write into the state (False for notes that are context only)
    writes: list[bool] = field(default_factory=list)

    def extend(self, other: Encoded) -> None:
        self.ids += other.ids
        self.segment_ids += other.segment_ids
        self.text += other.text
        self.writes += other.writes or [True] * len(other.ids)

    def runs(self) -> list[tuple[int, int, bool]]:
        """``(start, end, writes)`` of the maximal runs of tokens with the same write flag."""
        flags = self.writes or [True] * len(self.ids)
        out: list[tuple[int, int, bool]] = []
        start = 0
        for i in range(1, len(flags) + 1):
            if i == len(flags) or flags[i] != flags[start]:
                out.append((start, i, flags[start]))
                start = i
        return out


class ChatEncoder:
    """Incremental chat-template encoding for one tokenizer."""

    def __init__(self, tokenizer: Any, granularity: Literal["message", "sentence"] = "message") -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ChatTemplateError(
                f"the tokenizer of {getattr(tokenizer, 'name_or_path', 'this backbone')} has no chat template; "
                "set tokenizer.chat_template before creating a session"
            )
        self.tokenizer = tokenizer
        self.granularity = granularity

    def render(self, messages: Sequence[dict[str, Any]], *, add_generation_prompt: bool = False, tools: list[dict] | None = None) -> str:
        if not messages and not add_generation_prompt:
            return ""
        return self.tokenizer.apply_chat_template(
            list(messages), tools=tools, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def encode_delta(
        self,
        rendered: str,
        messages: Sequence[dict[str, Any]],
        start: int,
        *,
        next_segment: int,
        add_generation_prompt: bool = False,
        tools: list[dict] | None = None,
        unwritten: Collection[int] = (),
    ) -> tuple[Encoded, int]:
        """Encode ``messages[start:]`` given that ``rendered`` (the rendering of
        ``messages[:start]``, possibly followed by text already fed) is in the context.

        Messages whose index is in ``unwritten`` are context only: their tokens get no segment
        and ``writes`` False. Returns the tokens to feed and the next free segment id. Raises
        `ChatTemplateError` when the template does not extend ``rendered`` (then the caller
        rebuilds its context).
        """
        out = Encoded()
        previous = rendered
        for index in range(start, len(messages)):
            current = self.render(messages[: index + 1], tools=tools)
            delta = self._delta(previous, current)
            message = messages[index]
            if index in unwritten:
                piece = self._encode(delta, NOT_WRITTEN)
                piece.writes = [False] * len(piece.ids)
            elif message.get("role") == "system":
                piece = self._encode(delta, NOT_WRITTEN)
            elif self.granularity == "sentence":
                piece, next_segment = self._encode_sentences(delta, str(message.get("content") or ""), next_segment)
            else:
                piece = self._encode(delta, next_segment)
                next_segment += 1
            out.extend(piece)
            previous = current
        if add_generation_prompt:
            current = self.render(messages, add_generation_prompt=True, tools=tools)
            out.extend(self._encode(self._delta(previous, current), NOT_WRITTEN))
        return out, next_segment

    @staticmethod
    def _delta(previous: str, current: str) -> str:
        if not current.startswith(previous):
            raise ChatTemplateError("the chat template does not extend the context already fed")
        return current[len(previous) :]

    def _encode(self, text: str, segment: int) -> Encoded:
        ids = self.tokenize(text)
        return Encoded(ids, [segment] * len(ids), text)

    def _encode_sentences(self, delta: str, content: str, next_segment: int) -> tuple[Encoded, int]:
        """Sentence ids on the content tokens; template tokens around them are not written."""
        encoding = self.tokenizer(delta, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = encoding["input_ids"], encoding["offset_mapping"]
        segments = [NOT_WRITTEN] * len(ids)
        begin = delta.find(content) if content else -1
        if begin >= 0:
            for span_start, span_end in sentence_spans(content):
                lo, hi = begin + span_start, begin + span_end
                hit = False
                for i, (tok_start, tok_end) in enumerate(offsets):
                    if tok_end > tok_start and lo <= tok_end - 1 < hi:  # a token belongs where it ends
                        segments[i] = next_segment
                        hit = True
                next_segment += hit
        return Encoded(ids, segments, delta), next_segment
