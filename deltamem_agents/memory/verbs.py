"""The memory verbs of `HybridMemory`: add, get, get_all, update, delete, history, reset (and
their async twins), after mem0's ``Memory`` API.

A *memory entry* is one logged message or document: one or more text-log chunks that share a
``memory_id``. A new entry's memory id is its chunk ids' prefix (``sha256(...)[:32]``); a corrected
entry keeps the memory id it had, so its history reads as one line. Chunk ids (what `search`
returns) are accepted wherever a memory id is.

The OSAM state cannot unlearn or edit, so `update` and `delete` go through the one rebuild path
(`DeltaMemRuntime.rebuild`, as `HybridMemory.forget` does): the session's messages, corrected
or without the entry, are replayed into a fresh state that replaces log and state in one atomic
commit. Every change is appended to the audit (`MemoryAudit`) that `history` reads.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from deltamem_agents.errors import ConflictError, NotFoundError
from deltamem_agents.memory.audit import MemoryAudit, MemoryEvent, event_time
from deltamem_agents.memory.expiry import EXPIRES_AT, expiry_time, live
from deltamem_agents.memory.textlog import (
    DOCUMENT_ROLE,
    LogHit,
    TextLog,
    TextLogError,
    content_hash,
)
from deltamem_agents.session.session import MessageLike, as_message, template_view
from deltamem_agents.store.records import ChatMessage, SessionKey, utc, validate_id

if TYPE_CHECKING:
    from deltamem_agents.runtime import DeltaMemRuntime

#: Metadata keys the log sets itself; `add(metadata=...)` may not set them.
RESERVED_KEYS = frozenset(
    {"user_id", "session_id", "role", "turn", "chunk", "chunks", "timestamp", "source", "kind", "content_hash",
     "memory_id", "name", "tool_call_id", EXPIRES_AT}
)

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


class MemoryNotFoundError(NotFoundError, LookupError):
    """No memory entry with this id for this user (an unknown id and another user's id read the same)."""


class MemoryConflictError(ConflictError):
    """The change would collide with another entry (e.g. a correction to text the session already holds)."""


class MemoryItem(BaseModel):
    """One memory entry: its whole text, where it lives, and the chunks that hold it in the log."""

    id: str = Field(description="the memory id (stable across updates)")
    text: str
    user_id: str
    session_id: str
    role: str = Field(description="user, assistant, tool, or 'document'")
    kind: str = Field(description="'message' or 'document'")
    source: str
    turn: int
    created_at: datetime
    chunk_ids: list[str]
    expires_at: datetime | None = Field(None, description="when the entry expires (its TTL); None: never")
    metadata: dict[str, Any] = Field(default_factory=dict, description="the caller's metadata given to add")


class ResetReport(BaseModel):
    """What `reset` removed for a user."""

    user_id: str
    sessions_deleted: int
    log_entries_removed: int
    audit_events_removed: int


def _item(chunks: list[LogHit], text: str) -> MemoryItem:
    first = chunks[0].metadata
    return MemoryItem(
        id=first.get("memory_id") or chunks[0].id.rsplit("-", 1)[0], text=text, user_id=first["user_id"],
        session_id=first["session_id"], role=first["role"], kind=first.get("kind", "message"),
        source=first.get("source", ""), turn=first.get("turn", 0), created_at=event_time(first["timestamp"]),
        chunk_ids=[c.id for c in chunks], metadata={k: v for k, v in first.items() if k not in RESERVED_KEYS},
        expires_at=datetime.fromtimestamp(first[EXPIRES_AT], UTC) if EXPIRES_AT in first else None,
    )


def group_entries(hits: Iterable[LogHit]) -> dict[str, list[LogHit]]:
    """Log chunks grouped by memory entry (their ``memory_id``), each entry's chunks in order."""
    groups: dict[str, list[LogHit]] = {}
    for hit in hits:
        groups.setdefault(hit.metadata.get("memory_id") or hit.id.rsplit("-", 1)[0], []).append(hit)
    for chunks in groups.values():
        chunks.sort(key=lambda h: h.metadata.get("chunk", 0))
    return groups


def _check_metadata(metadata: dict[str, Any]) -> None:
    """What Chroma stores: plain keys (not the log's own), scalar values, 64-bit ints, finite floats."""
    reserved = sorted(set(metadata) & RESERVED_KEYS)
    if reserved:
        raise TextLogError(f"metadata keys {reserved} are set by the log itself; use other names")
    bad_keys = [k for k in metadata if not isinstance(k, str) or not _KEY.fullmatch(k)]
    if bad_keys:
        raise TextLogError(f"metadata keys {bad_keys[:3]!r} are invalid: use 1-64 characters from A-Z a-z 0-9 _ . -, "
                           "starting with a letter or _")
    bad = [k for k, v in metadata.items() if not (
        isinstance(v, str | bool) or (isinstance(v, int) and -(2**63) <= v < 2**63)
        or (isinstance(v, float) and math.isfinite(v))
    )]
    if bad:
        raise TextLogError(f"metadata values must be str, bool, 64-bit int or finite float: {bad[:3]} are not")


def _check_id(memory_id: Any) -> None:
    if not isinstance(memory_id, str) or not memory_id.strip():
        raise TextLogError(f"a memory id must be a non-empty string, got {memory_id!r}")


def _hash_of(message: ChatMessage, key: SessionKey) -> str:
    """The content hash the log gave ``message`` (what links a session message to its entry)."""
    role = DOCUMENT_ROLE if message.metadata.get("kind") == "document" else message.role
    return content_hash(key.user_id, key.session_id, role, template_view(message)["content"])


class MemoryVerbs:
    """The verbs, mixed into `HybridMemory` (which supplies the attributes and methods below)."""

    runtime: DeltaMemRuntime
    textlog: TextLog | None

    def forget(self, *, session_id: str, user_id: str = "default", ids: list[str] | None = None,
               progress: bool = True) -> Any: ...

    def _ingest(self, new: list[ChatMessage], *, session_id: str, user_id: str,
                extra: dict[str, Any] | None = None) -> tuple[int, list[list[str]]]: ...

    # -- helpers ---------------------------------------------------------------------------------------
    def _require_log(self) -> TextLog:
        if self.textlog is None:
            raise TextLogError("the memory verbs need a text log; this HybridMemory has none (textlog=None)")
        return self.textlog

    @property
    def audit(self) -> MemoryAudit:
        """The audit beside the text log (`MemoryAudit`)."""
        log = self._require_log()
        audit: MemoryAudit | None = getattr(self, "_audit", None)
        if audit is None or audit.textlog is not log:  # opened on first use, again if the log was swapped
            audit = self._audit = MemoryAudit(log)
        return audit

    def _chunks(self, memory_id: str, user_id: str, *, include_expired: bool = False) -> list[LogHit]:
        """Every chunk of the user's entry ``memory_id`` (or of the entry holding chunk ``memory_id``);
        an expired entry (TTL) reads as not found unless ``include_expired``."""
        _check_id(memory_id)
        validate_id("user_id", user_id)
        log = self._require_log()
        hits = log.find({"memory_id": memory_id}, user_id=user_id)
        if not hits:  # a chunk id (from search), or an entry logged before memory ids existed
            named = log.get([memory_id, f"{memory_id}-0"], user_id=user_id)
            if named:
                meta = named[0].metadata
                if meta.get("memory_id") and meta["memory_id"] != memory_id:
                    return self._chunks(meta["memory_id"], user_id, include_expired=include_expired)
                same = log.ids_for_hashes([meta["content_hash"]], user_id=meta["user_id"], session_id=meta["session_id"])
                hits = log.get(same, user_id=user_id)
        hits = [h for h in hits if h.metadata.get("user_id") == user_id]
        if not hits:
            raise MemoryNotFoundError(
                f"no memory {memory_id!r} for user {user_id!r} (get_all(user_id=...) lists the user's memories)"
            )
        if not include_expired and not live(hits):
            raise MemoryNotFoundError(f"memory {memory_id!r} of user {user_id!r} has expired (its TTL passed)")
        return sorted(hits, key=lambda h: h.metadata.get("chunk", 0))

    def _text(self, chunks: list[LogHit], messages: dict[str, ChatMessage] | None = None) -> str:
        """The entry's whole text: its chunk, or (chunks overlap) the session message they came from."""
        if len(chunks) == 1:
            return chunks[0].text
        meta = chunks[0].metadata
        if messages is None:
            messages = self._messages(SessionKey(user_id=meta["user_id"], session_id=meta["session_id"]))
        message = messages.get(meta["content_hash"])
        return message.content if message is not None else " ".join(c.text for c in chunks)

    def _messages(self, key: SessionKey) -> dict[str, ChatMessage]:
        record = self.runtime.store.load(key)
        return {} if record is None else {_hash_of(m, key): m for m in record.messages}

    # -- the verbs -------------------------------------------------------------------------------------
    def add(
        self, messages: Sequence[MessageLike] | str, *, session_id: str, user_id: str = "default",
        metadata: dict[str, str | int | float | bool] | None = None, call: str = "add",
        ttl: float | timedelta | None = None,
    ) -> list[str]:
        """Write messages (or one user text) into the session's state and the log, as `ingest`
        does; returns the memory ids of what was logged, in order (system messages are written
        into the state but not logged, so they have none). ``metadata`` goes on the entries
        (`get_all` filters on it); ``call`` names the caller in the audit. ``ttl`` (seconds or a
        timedelta): the entries expire then, unseen by every reader, and `prune` removes them."""
        _check_metadata(metadata or {})
        try:
            expires = expiry_time(ttl)
        except ValueError as exc:
            raise TextLogError(str(exc)) from None
        self._require_log()
        metadata = dict(metadata or {}) | ({} if expires is None else {EXPIRES_AT: expires})
        new = [ChatMessage(role="user", content=messages)] if isinstance(messages, str) else [as_message(m) for m in messages]
        key = SessionKey(user_id=user_id, session_id=session_id)
        with self.runtime.store.lock(key):
            _, logged = self._ingest(new, session_id=session_id, user_id=user_id, extra=dict(metadata or {}))
            ids = []
            for chunk_ids in logged:
                chunks = self._chunks(chunk_ids[0], user_id, include_expired=True)
                item = _item(chunks, self._text(chunks))
                if item.id not in ids:
                    ids.append(item.id)
                    if self.audit.history(item.id, user_id=user_id):
                        continue  # the same text again: the log stored nothing new
                    self.audit.record("ADD", memory_id=item.id, user_id=user_id, session_id=session_id, call=call,
                                      new_text=item.text)
        return ids

    def get(self, memory_id: str, *, user_id: str = "default") -> MemoryItem:
        """The entry ``memory_id`` of this user (`MemoryNotFoundError` if none)."""
        chunks = self._chunks(memory_id, user_id)
        return _item(chunks, self._text(chunks))

    def set_ttl(self, memory_id: str, ttl: float | timedelta | None, *, user_id: str = "default") -> MemoryItem:
        """Give the entry a new TTL counted from now (None: it never expires). Only the log's
        metadata changes (the state holds no expiry), so this is cheap."""
        try:
            expires = expiry_time(ttl)
        except ValueError as exc:
            raise TextLogError(str(exc)) from None
        chunks = self._chunks(memory_id, user_id)
        self._require_log().patch_metadata([c.id for c in chunks], {EXPIRES_AT: expires}, user_id=user_id)
        return self.get(memory_id, user_id=user_id)

    def get_all(
        self, *, user_id: str = "default", session_id: str | None = None, since: datetime | None = None,
        until: datetime | None = None, metadata: dict[str, Any] | None = None, limit: int | None = None,
    ) -> list[MemoryItem]:
        """The user's entries (one session's, with ``session_id``) in log order, logged at or after
        ``since`` and before ``until`` (naive datetimes are UTC), whose metadata has every
        ``metadata`` key with that value (log fields too: ``role``, ``kind``, ``source``)."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise TextLogError(f"limit must be an int >= 0 or None, got {limit!r}")
        since_, until_ = (utc(t) if t is not None else None for t in (since, until))
        groups = group_entries(self._require_log().list(user_id=user_id, session_id=session_id))
        items: list[MemoryItem] = []
        sessions: dict[str, dict[str, ChatMessage]] = {}
        for chunks in groups.values():
            meta = chunks[0].metadata
            at = event_time(meta["timestamp"])
            if (since_ and at < since_) or (until_ and at >= until_):
                continue
            if any(meta.get(k) != v for k, v in (metadata or {}).items()):
                continue
            if len(chunks) > 1 and meta["session_id"] not in sessions:
                sessions[meta["session_id"]] = self._messages(SessionKey(user_id=user_id, session_id=meta["session_id"]))
            items.append(_item(chunks, self._text(chunks, sessions.get(meta["session_id"]))))
            if limit is not None and len(items) >= limit:
                break
        return items

    def update(self, memory_id: str, text: str, *, user_id: str = "default", call: str = "update",
               progress: bool = False) -> MemoryItem:
        """Correct or replace the entry's text. The session's message is replaced and its state
        re-derived by replaying the corrected messages into a fresh state (one atomic commit);
        the entry keeps its memory id. An unknown id, another user's id, or text the session
        already holds changes nothing."""
        if not isinstance(text, str) or not text.strip():
            raise TextLogError("the new text is empty: delete the memory instead")
        log = self._require_log()
        meta = self._chunks(memory_id, user_id)[0].metadata
        key = SessionKey(user_id=user_id, session_id=meta["session_id"])
        with self.runtime.store.lock(key):
            chunks = self._chunks(memory_id, user_id)  # again, under the lock
            meta, memory_id = chunks[0].metadata, _item(chunks, "").id
            record = self.runtime.store.require(key, expect=self.runtime.fingerprint)
            matches = [m for m in record.messages if _hash_of(m, key) == meta["content_hash"]]
            if not matches:
                raise MemoryNotFoundError(f"memory {memory_id!r} is in the log but no longer in session {key}")
            old_text = self._text(chunks, {meta["content_hash"]: matches[0]})
            corrected = matches[0].model_copy(update={"content": text})
            new_hash = _hash_of(corrected, key)
            if new_hash == meta["content_hash"]:
                return _item(chunks, old_text)  # same text: nothing to change
            clash = log.ids_for_hashes([new_hash], user_id=user_id, session_id=key.session_id)
            if clash:
                raise MemoryConflictError(
                    f"session {key} already holds this text (log entry {clash[0]!r}); delete memory {memory_id!r} instead"
                )
            keep = {k: v for k, v in meta.items() if k not in RESERVED_KEYS or k == EXPIRES_AT} | {"memory_id": memory_id}
            if meta.get("kind") == "document":
                new_ids = log.add_document(text, user_id=user_id, session_id=key.session_id, source=meta["source"],
                                           turn=None if meta["turn"] < 0 else meta["turn"], metadata=keep)
            else:
                logged = corrected.model_copy(update={"content": template_view(corrected)["content"]})
                new_ids = log.add_message(logged, user_id=user_id, session_id=key.session_id, turn=meta["turn"],
                                          source=meta["source"], metadata=keep)
            try:
                self.runtime.rebuild(
                    key.session_id, user_id=user_id, keep=lambda m: True, progress=progress,
                    edit=lambda m: m.model_copy(update={"content": text}) if _hash_of(m, key) == meta["content_hash"] else m,
                )
            except BaseException:
                log.delete(new_ids, user_id=user_id)  # the store is unchanged: take the new entry back out
                raise
            log.delete([c.id for c in chunks], user_id=user_id)
            self.audit.record("UPDATE", memory_id=memory_id, user_id=user_id, session_id=key.session_id, call=call,
                              old_text=old_text, new_text=text)
        return self.get(memory_id, user_id=user_id)

    def delete(self, memory_id: str, *, user_id: str = "default", call: str = "delete", progress: bool = False) -> Any:
        """Forget one entry (`HybridMemory.forget`: the state is rebuilt without it); returns the
        `ForgetReport`. The entry's history stays readable, ending with the DELETE."""
        meta = self._chunks(memory_id, user_id)[0].metadata
        key = SessionKey(user_id=user_id, session_id=meta["session_id"])
        with self.runtime.store.lock(key):
            chunks = self._chunks(memory_id, user_id)
            item = _item(chunks, self._text(chunks))
            report = self.forget(session_id=key.session_id, user_id=user_id, ids=item.chunk_ids, progress=progress)
            self.audit.record("DELETE", memory_id=item.id, user_id=user_id, session_id=key.session_id, call=call,
                              old_text=item.text)
        return report

    def history(self, memory_id: str, *, user_id: str = "default") -> list[MemoryEvent]:
        """Every recorded change of the entry, oldest first. A deleted entry keeps its history;
        an entry logged by a chat turn has none until it is changed."""
        _check_id(memory_id)
        validate_id("user_id", user_id)
        events = self.audit.history(memory_id, user_id=user_id)
        if events:
            return events
        item = self.get(memory_id, user_id=user_id)  # unknown ids raise; chunk ids resolve
        return self.audit.history(item.id, user_id=user_id)

    def reset(self, *, user_id: str = "default") -> ResetReport:
        """Delete everything of a user: every session (state and messages), every log entry and
        the user's audit. Other users are untouched."""
        validate_id("user_id", user_id)
        sessions = self.runtime.sessions(user_id)
        for meta in sessions:
            with self.runtime.store.lock(meta.key):
                self.runtime.delete(meta.key.session_id, user_id=user_id)
        removed = self.textlog.delete_user(user_id=user_id) if self.textlog is not None else 0
        events = self.audit.erase_user(user_id) if self.textlog is not None else 0
        return ResetReport(user_id=user_id, sessions_deleted=len(sessions), log_entries_removed=removed,
                           audit_events_removed=events)

    # -- async twins: each verb runs start to end in one worker thread (the store lock is per thread) --
    async def aadd(self, messages: Sequence[MessageLike] | str, **kwargs: Any) -> list[str]:
        return await asyncio.to_thread(self.add, messages, **kwargs)

    async def aget(self, memory_id: str, **kwargs: Any) -> MemoryItem:
        return await asyncio.to_thread(self.get, memory_id, **kwargs)

    async def aset_ttl(self, memory_id: str, ttl: float | timedelta | None, **kwargs: Any) -> MemoryItem:
        return await asyncio.to_thread(self.set_ttl, memory_id, ttl, **kwargs)

    async def aget_all(self, **kwargs: Any) -> list[MemoryItem]:
        return await asyncio.to_thread(self.get_all, **kwargs)

    async def asearch(self, query: str, **kwargs: Any) -> list[LogHit]:
        return await asyncio.to_thread(self.search, query, **kwargs)  # type: ignore[attr-defined]

    async def aupdate(self, memory_id: str, text: str, **kwargs: Any) -> MemoryItem:
        return await asyncio.to_thread(self.update, memory_id, text, **kwargs)

    async def adelete(self, memory_id: str, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self.delete, memory_id, **kwargs)

    async def ahistory(self, memory_id: str, **kwargs: Any) -> list[MemoryEvent]:
        return await asyncio.to_thread(self.history, memory_id, **kwargs)

    async def areset(self, **kwargs: Any) -> ResetReport:
        return await asyncio.to_thread(self.reset, **kwargs)


__all__ = [
    "RESERVED_KEYS",
    "MemoryConflictError",
    "MemoryItem",
    "MemoryNotFoundError",
    "MemoryVerbs",
    "ResetReport",
    "group_entries",
]
