"""Retention: entries expire by their TTL or by their user's policy, and `prune` takes them out.

Two ways an entry expires:

* its own TTL (``add(..., ttl=...)``, `deltamem_agents.memory.expiry`): from then on no reader sees
  it, whether or not `prune` has run;
* its user's `RetentionPolicy`: older than ``max_age``, or beyond the newest ``max_entries``
  entries. A policy is kept per user in a Chroma collection beside the log
  (``<collection>-retention``), so it lives wherever the log lives and every server sharing the
  log applies the same one; users without one get `HybridConfig.retention`.

`prune` removes what has expired from the log and rebuilds each affected session's δ-state by
replaying the messages that remain (the state cannot unlearn: the same path as `forget`), one
rebuild per session, each an atomic commit, with an ``EXPIRE`` event in the entry's history.
Run it from a scheduler (``deltamem sessions prune``) or call it after a batch of writes.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator

from deltamem_agents.memory import expiry
from deltamem_agents.memory.audit import _NO_VECTOR, event_time  # policies, like events, are never searched by meaning
from deltamem_agents.memory.expiry import EXPIRES_AT, is_expired
from deltamem_agents.memory.textlog import LogHit, TextLog
from deltamem_agents.memory.verbs import group_entries
from deltamem_agents.store.records import SessionKey, validate_id

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

PruneReason = Literal["ttl", "max_age", "max_entries"]


def parse_duration(value: Any) -> Any:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"45s"``, ``"2w"`` as a timedelta; anything else is left to
    pydantic (seconds, ISO 8601 such as ``"P30D"``, a timedelta)."""
    if isinstance(value, str) and (match := _DURATION.fullmatch(value)):
        return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()])
    return value


class RetentionPolicy(BaseModel):
    """How long a user's entries are kept. Both limits unset (the default): kept until deleted.
    In JSON, ``max_age`` is written as seconds (unambiguous, unlike ISO 8601 years and months)."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_timedelta="float")

    max_age: timedelta | None = Field(
        None, description="entries logged longer ago than this expire ('30d', '12h', seconds, or ISO 8601 'P30D')"
    )
    max_entries: int | None = Field(None, ge=1, description="only the user's newest this many entries are kept")

    @field_validator("max_age", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value)

    @field_validator("max_age")
    @classmethod
    def _positive(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError(f"max_age must be a positive duration, got {value}")
        return value

    @property
    def limits_anything(self) -> bool:
        return self.max_age is not None or self.max_entries is not None


class PrunedEntry(BaseModel):
    """One entry `prune` removed (or, in a dry run, would remove), and why."""

    memory_id: str
    user_id: str
    session_id: str
    reason: PruneReason
    chunk_ids: list[str]
    logged_at: datetime


class PruneReport(BaseModel):
    """What one `prune` call found and did."""

    at: datetime = Field(description="the clock reading every expiry was judged against")
    dry_run: bool
    users_checked: list[str]
    entries: list[PrunedEntry] = Field(default_factory=list)
    sessions_rebuilt: list[str] = Field(default_factory=list, description="'user/session' whose state was re-derived")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def log_entries_removed(self) -> int:
        return 0 if self.dry_run else sum(len(e.chunk_ids) for e in self.entries)


class RetentionPolicies:
    """The per-user policies of one `TextLog`, in the collection ``<collection>-retention``."""

    def __init__(self, textlog: TextLog) -> None:
        self.textlog = textlog
        self._collection: Collection | None = None

    @property
    def name(self) -> str:
        return f"{self.textlog.config.collection}-retention"

    def _policies(self) -> Collection:
        if self._collection is None:
            self._collection = self.textlog.client.get_or_create_collection(
                name=self.name, metadata={"deltamem:retention": 1}, embedding_function=None
            )
        return self._collection

    def get(self, user_id: str) -> RetentionPolicy | None:
        """The user's own policy (None: the user has none)."""
        found = self._policies().get(ids=[validate_id("user_id", user_id)], include=["documents"])
        docs = found["documents"] or []
        return RetentionPolicy.model_validate(json.loads(docs[0])) if docs else None

    def set(self, user_id: str, policy: RetentionPolicy | None) -> None:
        """Store the user's policy (one Chroma call), or with None remove it."""
        validate_id("user_id", user_id)
        if policy is None:
            self._policies().delete(ids=[user_id])
            return
        self._policies().upsert(ids=[user_id], documents=[policy.model_dump_json()], metadatas=[{"user_id": user_id}],
                                embeddings=[_NO_VECTOR])

    def users(self) -> list[str]:
        return sorted(self._policies().get(include=[])["ids"])


def select_expired(
    groups: dict[str, list[LogHit]], policy: RetentionPolicy, now: float
) -> list[tuple[str, PruneReason, list[LogHit]]]:
    """The entries that have expired at ``now``: by TTL first, then by age, then the oldest beyond
    ``max_entries`` (counted among the entries still kept)."""
    expired: list[tuple[str, PruneReason, list[LogHit]]] = []
    kept: list[tuple[datetime, str, list[LogHit]]] = []
    oldest = None if policy.max_age is None else datetime.fromtimestamp(now, UTC) - policy.max_age
    for memory_id, chunks in groups.items():
        meta, logged = chunks[0].metadata, event_time(chunks[0].metadata["timestamp"])
        if is_expired(meta, now):
            expired.append((memory_id, "ttl", chunks))
        elif oldest is not None and logged < oldest:
            expired.append((memory_id, "max_age", chunks))
        else:
            kept.append((logged, memory_id, chunks))
    if policy.max_entries is not None and len(kept) > policy.max_entries:
        kept.sort(key=lambda e: (e[0], e[2][0].metadata.get("turn", 0), e[1]))
        expired += [(memory_id, "max_entries", chunks) for _, memory_id, chunks in kept[: len(kept) - policy.max_entries]]
    return expired


class MemoryRetention:
    """`set_retention`, `get_retention` and `prune`, mixed into `HybridMemory` (which supplies
    ``runtime``, ``textlog``, ``config``, ``audit``, ``forget`` and ``_text``)."""

    runtime: Any
    textlog: TextLog | None
    config: Any

    if TYPE_CHECKING:
        def _require_log(self) -> TextLog: ...
        def _text(self, chunks: list[LogHit], messages: Any = None) -> str: ...
        def forget(self, *, session_id: str, user_id: str = "default", ids: list[str] | None = None,
                   progress: bool = True) -> Any: ...

    @property
    def retention_policies(self) -> RetentionPolicies:
        log = self._require_log()
        policies: RetentionPolicies | None = getattr(self, "_retention", None)
        if policies is None or policies.textlog is not log:
            policies = self._retention = RetentionPolicies(log)
        return policies

    def set_retention(self, user_id: str, policy: RetentionPolicy | dict[str, Any] | None) -> RetentionPolicy:
        """Give a user a retention policy (None: back to the default); returns the policy in force.
        Nothing is removed until `prune` runs (expired entries stay readable until then)."""
        policy = RetentionPolicy.model_validate(policy) if isinstance(policy, dict) else policy
        self.retention_policies.set(user_id, policy)
        return self.get_retention(user_id)

    def get_retention(self, user_id: str) -> RetentionPolicy:
        """The policy in force for the user: their own, else `HybridConfig.retention`."""
        return self.retention_policies.get(user_id) or self.config.retention

    def _users_to_check(self, log: TextLog, now: float) -> list[str]:
        users = {m.key.user_id for m in self.runtime.sessions(None)} | set(self.retention_policies.users())
        if self.config.retention.limits_anything:  # the default applies to everyone: every user in the log
            return sorted(users | set(log.users()))
        users |= {hit.user_id for hit in log.find({EXPIRES_AT: {"$lte": now}})}
        return sorted(users)

    def prune(
        self, *, user_id: str | None = None, dry_run: bool = False, now: datetime | None = None, progress: bool = False
    ) -> PruneReport:
        """Remove every expired entry (of one user, or of all) from the log and rebuild each
        affected session's state from what remains. ``dry_run`` only reports what would go;
        ``now`` judges expiry at another time (tests, "what would a prune next week remove")."""
        log = self._require_log()
        clock = expiry.now() if now is None else (now if now.tzinfo else now.replace(tzinfo=UTC)).timestamp()
        users = [validate_id("user_id", user_id)] if user_id is not None else self._users_to_check(log, clock)
        report = PruneReport(at=datetime.fromtimestamp(clock, UTC), dry_run=dry_run, users_checked=users)
        for user in users:
            groups = group_entries(log.list(user_id=user, include_expired=True))
            by_session: dict[str, list[tuple[str, PruneReason, list[LogHit]]]] = {}
            for entry in select_expired(groups, self.get_retention(user), clock):
                by_session.setdefault(entry[2][0].metadata["session_id"], []).append(entry)
            for session_id, entries in sorted(by_session.items()):
                report.entries += [
                    PrunedEntry(memory_id=m, user_id=user, session_id=session_id, reason=r, chunk_ids=[c.id for c in cs],
                                logged_at=event_time(cs[0].metadata["timestamp"]))
                    for m, r, cs in entries
                ]
                if not dry_run and self._prune_session(log, SessionKey(user_id=user, session_id=session_id), entries,
                                                       progress=progress):
                    report.sessions_rebuilt.append(f"{user}/{session_id}")
        return report

    def _prune_session(
        self, log: TextLog, key: SessionKey, entries: list[tuple[str, PruneReason, list[LogHit]]], *, progress: bool
    ) -> bool:
        """Take one session's expired entries out (under its lock); True if its state was rebuilt."""
        with self.runtime.store.lock(key):
            present = {h.id for h in log.get([c.id for _, _, chunks in entries for c in chunks], user_id=key.user_id)}
            entries = [(m, r, [c for c in chunks if c.id in present]) for m, r, chunks in entries]
            entries = [e for e in entries if e[2]]  # another call removed the rest meanwhile
            if not entries:
                return False
            texts = {m: self._text(chunks) for m, _, chunks in entries}
            ids = [c.id for _, _, chunks in entries for c in chunks]
            rebuilt = self.runtime.store.load(key) is not None
            if rebuilt:
                self.forget(session_id=key.session_id, user_id=key.user_id, ids=ids, progress=progress)
            else:  # log entries of a session that is gone from the store: nothing to replay
                log.delete(ids, user_id=key.user_id)
            for memory_id, reason, _ in entries:
                self.audit.record("EXPIRE", memory_id=memory_id, user_id=key.user_id, session_id=key.session_id,  # type: ignore[attr-defined]
                                  call=f"prune ({reason})", old_text=texts[memory_id])
        return rebuilt

    async def aprune(self, **kwargs: Any) -> PruneReport:
        return await asyncio.to_thread(self.prune, **kwargs)

    async def aset_retention(self, user_id: str, policy: RetentionPolicy | dict[str, Any] | None) -> RetentionPolicy:
        return await asyncio.to_thread(self.set_retention, user_id, policy)


__all__ = [
    "MemoryRetention",
    "PruneReason",
    "PruneReport",
    "PrunedEntry",
    "RetentionPolicies",
    "RetentionPolicy",
    "parse_duration",
    "select_expired",
]
