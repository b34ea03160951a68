"""`MemoryAudit`: the append-only history of every change made to a memory entry.

mem0 users ask "how did this memory change, and who changed it?"; the text log alone cannot say,
because a corrected entry's old text is gone. Each change (add, update, delete) is one event
record in a Chroma collection beside the text log's (``<collection>-audit``), in the same client:
so it lives wherever the log lives (embedded folder or ``chroma run`` server), survives a restart,
and each event is written by one Chroma call (all or nothing). Events are only ever added; the
one exception is `erase_user`, which `HybridMemory.reset` uses to wipe a user entirely.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from deltamem_agents.store.records import utc, utc_now

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection

    from deltamem_agents.memory.textlog import TextLog

#: Chroma stores a vector with every record; audit events are never searched by meaning.
_NO_VECTOR = [1.0]

AuditEventKind = Literal["ADD", "UPDATE", "DELETE", "EXPIRE"]


class MemoryEvent(BaseModel):
    """One change to one memory entry: what it said before and after, when, and by which call."""

    model_config = ConfigDict(frozen=True)

    memory_id: str
    seq: int = Field(ge=0, description="0 for the entry's first recorded event, then 1, 2, ...")
    event: AuditEventKind
    old_text: str | None = Field(None, description="the text before the change (None for ADD)")
    new_text: str | None = Field(None, description="the text after the change (None for DELETE)")
    at: datetime = Field(default_factory=utc_now)
    call: str = Field(description="the verb that made the change, e.g. 'update' or 'PATCH /v1/memories/{id}'")
    user_id: str
    session_id: str


class MemoryAudit:
    """The audit collection of one `TextLog` (opened on first use, in the log's Chroma client)."""

    def __init__(self, textlog: TextLog) -> None:
        self.textlog = textlog
        self._collection: Collection | None = None

    @property
    def name(self) -> str:
        return f"{self.textlog.config.collection}-audit"

    def _events(self) -> Collection:
        if self._collection is None:
            self._collection = self.textlog.client.get_or_create_collection(
                name=self.name, metadata={"deltamem:audit": 1}, embedding_function=None,
            )
        return self._collection

    def record(
        self, event: AuditEventKind, *, memory_id: str, user_id: str, session_id: str, call: str,
        old_text: str | None = None, new_text: str | None = None,
    ) -> MemoryEvent:
        """Append one event (callers hold the session's lock, so an entry's events never race)."""
        seq = len(self._events().get(where={"memory_id": memory_id}, include=[])["ids"])
        entry = MemoryEvent(
            memory_id=memory_id, seq=seq, event=event, old_text=old_text, new_text=new_text, call=call,
            user_id=user_id, session_id=session_id,
        )
        self._events().add(
            ids=[f"{memory_id}:{seq:06d}"],
            documents=[entry.model_dump_json()],
            metadatas=[{"memory_id": memory_id, "user_id": user_id, "session_id": session_id, "seq": seq}],
            embeddings=[_NO_VECTOR],
        )
        return entry

    def history(self, memory_id: str, *, user_id: str) -> list[MemoryEvent]:
        """The entry's events, oldest first (only the user's own: another user's id has none)."""
        found = self._events().get(where={"$and": [{"memory_id": memory_id}, {"user_id": user_id}]}, include=["documents"])
        events = [MemoryEvent.model_validate(json.loads(doc)) for doc in found["documents"] or []]
        return sorted(events, key=lambda e: e.seq)

    def erase_user(self, user_id: str) -> int:
        """Delete every event of a user (a reset forgets the user entirely); returns how many."""
        ids = self._events().get(where={"user_id": user_id}, include=[])["ids"]
        if ids:
            self._events().delete(ids=list(ids))
        return len(ids)


def event_time(value: Any) -> datetime:
    """A stored ISO timestamp as an aware UTC datetime."""
    return utc(value if isinstance(value, datetime) else datetime.fromisoformat(str(value)))


__all__ = ["AuditEventKind", "MemoryAudit", "MemoryEvent", "event_time"]
