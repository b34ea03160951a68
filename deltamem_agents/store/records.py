"""Records of a persisted session: ids, chat messages, model fingerprints and metadata.

These models cross the file boundary (they are written to ``meta.json`` and ``messages.jsonl``
by :mod:`deltamem_agents.store.directory`), so they are strict: unknown fields are refused and
every timestamp is timezone-aware UTC.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from deltamem_agents.errors import UserError

if TYPE_CHECKING:
    from deltamem_agents.core.state import DeltaMemState

SESSION_SCHEMA_VERSION = 1

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
ID_RULE = (
    "1-128 characters from A-Z a-z 0-9 . _ @ -, starting with a letter or digit, "
    "and not containing '..'"
)


class InvalidSessionIdError(UserError, ValueError):
    """A user id or session id that could not safely name a directory or a key."""


def validate_id(kind: str, value: str) -> str:
    """Return ``value`` if it is a valid ``kind`` id (e.g. ``"user_id"``), else raise.

    The rule makes path traversal impossible: no separators, no leading dot, no ``..``.
    """
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value) or ".." in value or value in (".", ".."):
        raise InvalidSessionIdError(f"invalid {kind} {value!r}: a {kind} must be {ID_RULE}")
    return value


def utc(value: datetime) -> datetime:
    """A timezone-aware UTC datetime (naive datetimes are taken to be UTC already)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


class SessionKey(BaseModel):
    """Which session: ``user_id`` (default ``"default"``) and ``session_id``; ``str()`` is ``user/session``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    user_id: str = "default"
    session_id: str

    def __init__(self, /, **data: Any) -> None:
        # Validate before pydantic so a bad id raises InvalidSessionIdError itself, not a
        # ValidationError wrapping it (model_validate on file data still goes through the
        # field validators below).
        if "user_id" in data:
            validate_id("user_id", data["user_id"])
        if "session_id" in data:
            validate_id("session_id", data["session_id"])
        super().__init__(**data)

    @field_validator("user_id", "session_id")
    @classmethod
    def _check_id(cls, value: str, info: Any) -> str:
        return validate_id(info.field_name, value)

    @classmethod
    def parse(cls, text: str | SessionKey) -> SessionKey:
        """``"user/session"`` or ``"session"`` (user ``default``) -> a key."""
        if isinstance(text, SessionKey):
            return text
        user, sep, session = str(text).partition("/")
        return cls(user_id=user, session_id=session) if sep else cls(session_id=user)

    def __str__(self) -> str:
        return f"{self.user_id}/{self.session_id}"


class ChatMessage(BaseModel):
    """One message of a conversation, as logged (OpenAI-style roles and tool fields)."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    created_at: datetime = Field(default_factory=utc_now)
    metadata: dict[str, Any] = Field(default_factory=dict, description="e.g. source, turn index")

    @field_validator("created_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return utc(value)


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces, UTF-8 kept): what the log chain hashes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_next(previous: str, message_json: Any) -> str:
    """``sha256(previous + canonical_json(message))``: the log chain after one more message.

    ``message_json`` is the JSON form of a message (``ChatMessage.model_dump(mode="json")`` or
    the object read back from the log); the chain before the first message is ``""``.
    """
    return hashlib.sha256((previous + canonical_json(message_json)).encode("utf-8")).hexdigest()


class Fingerprint(BaseModel):
    """What a saved OSAM state is only valid for: backbone, adapter weights and δ-mem config."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backbone: str = Field(description="backbone name, e.g. HuggingFaceTB/SmolLM2-135M-Instruct")
    backbone_signature: str = Field(description="a hash of the backbone given by the caller")
    adapter: str = Field("none", description="sha256 of the adapter weights, or 'none'")
    config: str = Field(description="hash of the δ-mem config")

    def mismatch(self, other: Fingerprint) -> list[str]:
        """One sentence per differing field (``self`` is the saved side, ``other`` the expected side)."""
        out = []
        for name, what in (
            ("backbone", "backbone"),
            ("backbone_signature", "backbone signature"),
            ("adapter", "adapter"),
            ("config", "δ-mem config"),
        ):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                out.append(f"{what} differs: saved {mine!r}, expected {theirs!r}")
        return out

    def describe(self) -> str:
        return (
            f"backbone={self.backbone!r} (signature {self.backbone_signature!r}), "
            f"adapter={self.adapter!r}, config={self.config!r}"
        )


class SessionMetadata(BaseModel):
    """The commit record of a session (``meta.json``): counters, fingerprint, and what is committed."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SESSION_SCHEMA_VERSION
    key: SessionKey
    fingerprint: Fingerprint
    created_at: datetime = Field(default_factory=utc_now)
    updated_at: datetime = Field(default_factory=utc_now)
    turn_count: int = Field(0, ge=0)
    message_count: int = Field(0, ge=0)
    tokens_written: int = Field(0, ge=0)
    state_file: str | None = None
    state_sha256: str | None = None
    log_chain: str = Field("", description="chain of the last committed message ('' when none)")
    log_bytes: int = Field(0, ge=0, description="byte length of the committed part of the log (backend-specific)")
    log_file: str = Field("messages.jsonl", description="the committed log's file name (a rewrite starts a new one)")
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("created_at", "updated_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return utc(value)


@dataclass
class SessionRecord:
    """A loaded session: its metadata, its OSAM state (``None`` before any is saved) and its log."""

    metadata: SessionMetadata
    state: DeltaMemState | None = None
    messages: list[ChatMessage] = field(default_factory=list)

    @property
    def key(self) -> SessionKey:
        return self.metadata.key

    @property
    def fingerprint(self) -> Fingerprint:
        return self.metadata.fingerprint
