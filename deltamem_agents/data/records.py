"""The data every part of training and evaluation shares: conversations and their probes.

A `Conversation` is a history of chat messages (grouped into sessions, as days of a long chat)
followed by `Probe`s: questions or requests asked after the history has left the attention
window. Generated conversations and LoCoMo files both load into these models, so the trainer
and `deltamem eval` never care where a conversation came from. They are written as JSONL.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: what a probe asks about; the issue's goals are stated per kind
ProbeKind = Literal["fact", "preference", "instruction", "task", "request", "locomo"]
MEMORY_KINDS: tuple[ProbeKind, ...] = ("preference", "instruction", "task")


class Turn(BaseModel):
    """One chat message of the history."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str = Field(min_length=1)
    session: int = Field(0, ge=0, description="which session (day) of the conversation it belongs to")


class Rule(BaseModel):
    """An instruction the reply to a request must follow, checked without a model."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["nickname", "language", "max_words"]
    value: str = Field(description="the nickname, the language name, or the word limit")


class Probe(BaseModel):
    """A question (scored by token F1 / exact match) or a request (scored by rule checks)."""

    model_config = ConfigDict(extra="forbid")

    kind: ProbeKind
    question: str = Field(min_length=1)
    answer: str = Field(description="gold answer; for requests, a reference reply that follows the rules")
    evidence: list[int] = Field(default_factory=list, description="indices of the history turns that hold the answer")
    rules: list[Rule] = Field(default_factory=list)
    category: str | None = Field(None, description="source-specific category (LoCoMo's 1-5)")


class Conversation(BaseModel):
    """A history and the probes asked after it."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    source: str = Field("synthetic", description="'synthetic' or the file it was loaded from")
    turns: list[Turn] = Field(min_length=1)
    probes: list[Probe] = Field(default_factory=list)

    def messages(self) -> list[dict[str, str]]:
        """The history as chat-template messages."""
        return [{"role": t.role, "content": t.content} for t in self.turns]


def write_jsonl(conversations: Iterable[Conversation], path: str | Path) -> Path:
    """One conversation per line; written to a temporary file and renamed into place."""
    from deltamem_agents.fileio import atomic_write_bytes

    path = Path(path)
    text = "".join(c.model_dump_json() + "\n" for c in conversations)
    atomic_write_bytes(path, text.encode())
    return path


def read_jsonl(path: str | Path) -> list[Conversation]:
    """Conversations from a JSONL file; a bad line is reported with its number."""
    from pydantic import ValidationError

    path = Path(path)
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(Conversation.model_validate_json(line))
        except ValidationError as exc:
            raise ValueError(f"{path}:{number} is not a conversation: {exc.errors()[0]['msg']}") from exc
    return out


def iter_probes(conversations: Iterable[Conversation]) -> Iterator[tuple[Conversation, Probe]]:
    for conversation in conversations:
        for probe in conversation.probes:
            yield conversation, probe
