"""What stored bytes must be, decided once for every backend.

A backend reads and writes bytes its own way (files, Redis keys); the encoding of the message
log (hash-chained JSONL), the checks on metadata, fingerprint, state checksum and chain, and the
bookkeeping after a commit live here, so every store refuses the same damage with the same words.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from deltamem_agents.core.state import DeltaMemState, StateFileError
from deltamem_agents.store.base import (
    SessionConflictError,
    SessionCorruptError,
    SessionExistsError,
    SessionMismatchError,
    SessionNotFoundError,
)
from deltamem_agents.store.records import (
    SESSION_SCHEMA_VERSION,
    ChatMessage,
    Fingerprint,
    SessionKey,
    SessionMetadata,
    SessionRecord,
    chain_next,
    utc_now,
)

META_FILE = "meta.json"
LOG_FILE = "messages.jsonl"
LOCK_FILE = ".lock"
STATE_PREFIX = "state-"
STATE_SUFFIX = ".safetensors"


def encode_log(messages: Sequence[ChatMessage], *, start: int, chain: str) -> tuple[bytes, str]:
    """JSONL lines for ``messages`` numbered from ``start``, continuing the hash ``chain``."""
    lines = []
    for offset, message in enumerate(messages):
        body = message.model_dump(mode="json")
        chain = chain_next(chain, body)
        entry = {"i": start + offset, "chain": chain, "message": body}
        lines.append(json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n")
    return "".join(lines).encode("utf-8"), chain


# -- verification shared by every backend -----------------------------------------------------
# A backend reads bytes its own way; what the bytes must be (schema, key, fingerprint, checksum,
# hash chain) is decided here, once, so every store refuses the same damage with the same words.
def state_name(turn: int) -> str:
    """The name of the state committed by ``turn`` (``state-000007.safetensors``)."""
    return f"{STATE_PREFIX}{turn:06d}{STATE_SUFFIX}"


def parse_metadata(key: SessionKey, raw: bytes, source: str) -> SessionMetadata:
    """Committed metadata from its JSON bytes, checked: schema version, fields, and that it
    describes ``key`` (``source`` names where it was read, for the error)."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SessionCorruptError(
            f"session {key}: {source} is not valid JSON ({exc}); restore it from a backup or delete the session"
        ) from exc
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version != SESSION_SCHEMA_VERSION:
        hint = (
            "it was written by a newer deltamem-agents: upgrade to read it"
            if isinstance(version, int) and version > SESSION_SCHEMA_VERSION
            else "restore it from a backup or delete the session"
        )
        raise SessionCorruptError(
            f"session {key}: {source} has schema_version {version!r}, this version reads "
            f"{SESSION_SCHEMA_VERSION}; {hint}"
        )
    try:
        meta = SessionMetadata.model_validate(data)
    except ValidationError as exc:
        raise SessionCorruptError(
            f"session {key}: {source} is not valid session metadata ({exc}); "
            "restore it from a backup or delete the session"
        ) from exc
    if meta.key != key:
        raise SessionCorruptError(
            f"session {key}: {source} describes session {meta.key}; a stored session cannot be "
            "renamed or copied under another id"
        )
    return meta


def check_fingerprint(meta: SessionMetadata, expect: Fingerprint | None) -> None:
    """`SessionMismatchError` if ``expect`` is given and is not what the session was saved for."""
    if expect is not None and meta.fingerprint != expect:
        raise SessionMismatchError(meta.key, meta.fingerprint, expect)


def decode_state(key: SessionKey, meta: SessionMetadata, data: bytes, source: str, device: str) -> DeltaMemState:
    """The committed state from its bytes, after checking them against ``meta.state_sha256``."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != meta.state_sha256:
        raise SessionCorruptError(
            f"session {key}: {source} fails its checksum (sha256 {digest}, the metadata "
            f"records {meta.state_sha256}); it was modified or damaged"
        )
    try:
        return DeltaMemState.from_bytes(data, device=device)
    except StateFileError as exc:
        raise SessionCorruptError(f"session {key}: {source} is unreadable: {exc}") from exc


def decode_log(key: SessionKey, meta: SessionMetadata, data: bytes, source: str) -> list[ChatMessage]:
    """The committed messages from the log's bytes (at least ``meta.log_bytes`` of them, JSONL
    as written by `encode_log`), verified line by line against the hash chain in ``meta``."""

    def corrupt(what: str) -> SessionCorruptError:
        return SessionCorruptError(
            f"session {key}: {source} {what}; the log was modified or damaged "
            "(restore it from a backup, or delete the session)"
        )

    if meta.message_count == 0:
        return []
    if len(data) < meta.log_bytes:
        raise corrupt(f"is truncated ({len(data)} bytes, {meta.log_bytes} committed)")
    data = data[: meta.log_bytes]
    if not data.endswith(b"\n"):
        raise corrupt(f"does not end a line at the committed length ({meta.log_bytes} bytes)")
    lines = data[:-1].split(b"\n")
    if len(lines) != meta.message_count:
        raise corrupt(f"has {len(lines)} committed lines, the metadata records {meta.message_count} messages")
    chain = ""
    messages: list[ChatMessage] = []
    for index, line in enumerate(lines):
        try:
            entry = json.loads(line)
            ok = isinstance(entry, dict) and set(entry) == {"i", "chain", "message"}
        except (ValueError, UnicodeDecodeError):
            ok = False
        if not ok:
            raise corrupt(f"line {index + 1} is not a log entry")
        if entry["i"] != index:
            raise corrupt(f"line {index + 1} has index {entry['i']!r}, expected {index}")
        chain = chain_next(chain, entry["message"])
        if entry["chain"] != chain:
            raise corrupt(f"line {index + 1} fails the hash chain")
        try:
            messages.append(ChatMessage.model_validate(entry["message"]))
        except ValidationError as exc:
            raise corrupt(f"line {index + 1} is not a valid message ({exc})") from exc
    if chain != meta.log_chain:
        raise corrupt("does not end with the chain recorded in the metadata")
    return messages


def check_current(key: SessionKey, record: SessionRecord, current: SessionMetadata) -> None:
    """Optimistic concurrency: `SessionConflictError` unless ``record`` is the committed turn."""
    if (current.turn_count, current.log_chain, current.state_sha256) != (
        record.metadata.turn_count,
        record.metadata.log_chain,
        record.metadata.state_sha256,
    ):
        raise SessionConflictError(
            f"cannot commit to session {key}: it is at turn {current.turn_count} but this record is "
            f"from turn {record.metadata.turn_count} (another writer committed in between); hold "
            "store.lock(key) for the whole turn (load -> compute -> commit) and load again"
        )


def as_messages(messages: Sequence[ChatMessage | Mapping[str, Any]]) -> list[ChatMessage]:
    return [m if isinstance(m, ChatMessage) else ChatMessage.model_validate(m) for m in messages]


def not_found_for_commit(key: SessionKey) -> SessionNotFoundError:
    return SessionNotFoundError(f"cannot commit to session {key}: it does not exist (deleted?); create it again first")


def exists_error(key: SessionKey) -> SessionExistsError:
    return SessionExistsError(
        f"session {key} already exists: load it (store.load / load_or_create), pick another "
        f"session_id, or delete it first (`deltamem sessions delete {key}`)"
    )

def after_commit(
    current: SessionMetadata, *, added: int, log_bytes_added: int, chain: str, state_file: str | None,
    state_sha: str | None, tokens_written: int, extra: Mapping[str, Any] | None,
) -> SessionMetadata:
    """The metadata a `SessionStore.commit` of one turn on top of ``current`` records."""
    return current.model_copy(
        update={
            "updated_at": utc_now(),
            "turn_count": current.turn_count + 1,
            "message_count": current.message_count + added,
            "tokens_written": current.tokens_written + tokens_written,
            "state_file": state_file,
            "state_sha256": state_sha,
            "log_chain": chain,
            "log_bytes": current.log_bytes + log_bytes_added,
            "extra": dict(extra) if extra is not None else current.extra,
        }
    )


def after_rewrite(
    current: SessionMetadata, *, count: int, log_bytes: int, chain: str, state_file: str | None,
    state_sha: str | None, tokens_written: int, log_file: str,
) -> SessionMetadata:
    """The metadata a `SessionStore.rewrite` on top of ``current`` records."""
    return current.model_copy(
        update={
            "updated_at": utc_now(),
            "turn_count": current.turn_count + 1,
            "message_count": count,
            "tokens_written": tokens_written,
            "state_file": state_file,
            "state_sha256": state_sha,
            "log_chain": chain,
            "log_bytes": log_bytes,
            "log_file": log_file,
        }
    )
