"""Chat messages -> token ids with SSW segment ids, rendered by the backbone's chat template.

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

SENTENCE_BOUNDARY = re.compile(r"\n{2,}|(?<=[.!?;:])[\"')\]\u201d\u2019]*\s+")
NOT_WRITTEN = -1


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
