"""`UserCollections`: how the text log lays its entries out in Chroma, one collection per user.

Why one per user: Chroma answers a metadata filter (``where={"user_id": ...}``) by scanning the
collection, so a log shared by every user made each search pay for all of them (488 ms at 100k
entries, against ~4 ms for the user's own collection searched with no filter). This module owns
the naming, opening (with the embedding-model check), listing and dropping of those collections,
the reopening of a handle another process made stale, and the move of a log written by version 1
(every user in one collection) into this layout; and `LogHit`, the entry as read back from
Chroma. `TextLog` builds its verbs on top.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from deltamem_agents.errors import UserError

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

TEXTLOG_SCHEMA_VERSION = 2  # 2: one Chroma collection per user (1: every user in one collection)
USER_MARK = "-u"  # a user's collection is named <log name>-u<24 hex digits of sha256(user_id)>
_T = TypeVar("_T")


class TextLogError(UserError, ValueError):
    """Bad input to the text log, or a store it cannot use (the message says the fix)."""


class LogHit(BaseModel):
    """One stored entry: ``distance`` is set by ``search`` (smaller is closer), ``None`` otherwise."""

    model_config = ConfigDict(frozen=True)

    id: str
    text: str
    distance: float | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def user_id(self) -> str:
        return self.metadata["user_id"]

    @property
    def session_id(self) -> str:
        return self.metadata["session_id"]

    @property
    def role(self) -> str:
        return self.metadata["role"]

    @property
    def turn(self) -> int:
        return self.metadata["turn"]


def _missing() -> tuple[type[Exception], ...]:
    """What Chroma raises for a collection that does not exist (older clients: a ValueError)."""
    from chromadb.errors import NotFoundError

    return NotFoundError, ValueError


def delete_collection_if_present(client: ClientAPI, name: str) -> None:
    """Drop a collection; one that is already gone (or that another process removed meanwhile) is fine."""
    try:
        client.delete_collection(name)
    except _missing():
        pass


def on_fresh_handle(
    open_: Callable[[], Collection | None], forget: Callable[[], None], op: Callable[[Collection], _T], default: _T,
) -> _T:
    """``op`` on the handle ``open_`` gives (``default`` when it gives none); a handle whose
    collection another process deleted is forgotten and reopened, once."""
    from chromadb.errors import NotFoundError

    for attempt in (0, 1):
        collection = open_()
        if collection is None:
            return default
        try:
            return op(collection)
        except NotFoundError:  # deleted by another process since it was opened here
            forget()
            if attempt:
                raise
    raise AssertionError("unreachable")


class UserCollections:
    """The per-user Chroma collections of one log (named ``log_name``) on one client.

    Handles are cached; ``on_user`` drops and reopens, once, a handle whose collection another
    process deleted (`drop`, `drop_all`). Reading a user who has no collection creates none.
    """

    def __init__(
        self, client: ClientAPI, log_name: str, *, distance: str, embedding: str, batch_size: int,
        on_open: Callable[[Collection], None] | None = None, created_metadata: dict[str, Any] | None = None,
    ) -> None:
        self.client, self.log_name, self.distance, self.embedding = client, log_name, distance, embedding
        self.batch_size = max(1, batch_size)
        self._open: dict[str, Collection] = {}
        # on_open: run once per handle before first use (the session indexes' one-time indexing);
        # created_metadata: more keys on a collection this layout creates (never on an existing one)
        self._on_open = on_open
        self._created_metadata = dict(created_metadata or {})

    def name(self, user_id: str) -> str:
        return f"{self.log_name}{USER_MARK}{hashlib.sha256(user_id.encode()).hexdigest()[:24]}"

    def check(self, collection: Collection) -> None:
        """Refuse a collection filled by another embedding model: its vectors cannot be compared."""
        stored = (collection.metadata or {}).get("deltamem:embedding")
        if stored is not None and stored != self.embedding:
            raise TextLogError(
                f"log {self.log_name!r} (Chroma collection {collection.name!r}) was written with embedding "
                f"function {stored!r}, not {self.embedding!r}: vectors of different models cannot be compared. "
                f"Use another log name (TextLogConfig(collection=...)) or the same embedding function"
            )

    def check_any(self) -> None:
        """The embedding check on one existing user collection (all of a log share one model)."""
        for collection in self.all().values():
            self.check(collection)
            return

    def get(self, user_id: str, *, create: bool = True) -> Collection | None:
        """The user's collection, made on first use; with ``create=False`` None when there is none."""
        cached = self._open.get(user_id)
        if cached is not None:
            return cached
        if create:
            collection = self.client.get_or_create_collection(
                name=self.name(user_id),
                configuration={"hnsw": {"space": self.distance}},
                metadata={"deltamem:embedding": self.embedding, "deltamem:schema": TEXTLOG_SCHEMA_VERSION,
                          "deltamem:log": self.log_name, "deltamem:user_id": user_id, **self._created_metadata},
                embedding_function=None,  # the log embeds itself: Chroma's default EF would download a model
            )
        else:
            try:
                collection = self.client.get_collection(self.name(user_id), embedding_function=None)
            except _missing():
                return None
        self.check(collection)
        if self._on_open is not None:
            self._on_open(collection)
        self._open[user_id] = collection
        return collection

    def all(self) -> dict[str, Collection]:
        """user id -> collection, for every user of this log."""
        found: dict[str, Collection] = {}
        for collection in self.client.list_collections():
            meta = collection.metadata or {}
            if meta.get("deltamem:log") == self.log_name and isinstance(meta.get("deltamem:user_id"), str):
                found[meta["deltamem:user_id"]] = collection
        return found

    def on_user(self, user_id: str, op: Callable[[Collection], _T], *, create: bool = False, default: _T) -> _T:
        """``op`` on the user's collection (``default`` when it has none and ``create`` is off)."""
        return on_fresh_handle(lambda: self.get(user_id, create=create), lambda: self._open.pop(user_id, None),
                               op, default)

    def drop(self, user_id: str) -> None:
        self._open.pop(user_id, None)
        delete_collection_if_present(self.client, self.name(user_id))

    def drop_all(self) -> None:
        self._open.clear()
        for collection in self.all().values():
            delete_collection_if_present(self.client, collection.name)

    def move_shared_collection(self, before_write: Callable[[str, list[str], list[Any], list[Any]], None]) -> None:
        """Move the entries of a version-1 log (every user in the one collection named after the
        log) into per-user collections, ids, vectors and metadata as they are, then drop it. Each
        batch is copied before it is deleted, so an interrupted move resumes at the next open.
        ``before_write(user_id, ids, metadatas, embeddings)`` runs before each user's batch is
        written (the session indexes)."""
        try:
            shared = self.client.get_collection(self.log_name, embedding_function=None)
        except _missing():
            return
        self.check(shared)
        step = min(self.batch_size, 1000)
        while True:
            batch: Any = shared.get(limit=step, include=["documents", "metadatas", "embeddings"])
            if not batch["ids"]:
                break
            by_user: dict[str, list[int]] = {}
            for index, meta in enumerate(batch["metadatas"] or []):
                by_user.setdefault(str((meta or {}).get("user_id", "default")), []).append(index)
            for user_id, rows in by_user.items():
                collection = self.get(user_id)
                assert collection is not None
                before_write(user_id, [batch["ids"][i] for i in rows], [(batch["metadatas"] or [])[i] for i in rows],
                             [batch["embeddings"][i] for i in rows])
                collection.upsert(
                    ids=[batch["ids"][i] for i in rows],
                    documents=[(batch["documents"] or [])[i] for i in rows],
                    metadatas=[(batch["metadatas"] or [])[i] for i in rows],
                    embeddings=[batch["embeddings"][i] for i in rows],
                )
            shared.delete(ids=list(batch["ids"]))
        self.client.delete_collection(self.log_name)


def entries_from_get(result: Any) -> list[LogHit]:
    """The entries of a Chroma ``get`` result."""
    return [
        LogHit(id=i, text=t or "", metadata=dict(m or {}))
        for i, t, m in zip(result["ids"], result["documents"] or [], result["metadatas"] or [])
    ]


def hits_from_query(result: Any) -> list[LogHit]:
    """The entries of a one-query Chroma ``query`` result, closest first."""
    return [
        LogHit(id=i, text=t or "", distance=float(d), metadata=dict(m or {}))
        for i, t, m, d in zip(
            result["ids"][0],
            (result["documents"] or [[]])[0],
            (result["metadatas"] or [[]])[0],
            (result["distances"] or [[]])[0],
        )
    ]


__all__ = [
    "TEXTLOG_SCHEMA_VERSION", "LogHit", "TextLogError", "UserCollections", "delete_collection_if_present",
    "entries_from_get", "hits_from_query", "on_fresh_handle",
]
