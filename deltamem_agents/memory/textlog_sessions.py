"""`SessionIndexes`: a small vector index per session, so a session is searched without a filter.

Why: a routed chat turn searches one session. In a user's collection, Chroma answers
``where={"session_id": ...}`` by filtering the whole collection (about 10 ms per 100k entries
before any vector is compared) and then walking the HNSW graph for the few allowed points, which
gets slower the smaller the session's share (75 ms for 100-entry sessions among 100k entries).
Each session therefore also gets a Chroma collection of its own holding only ids and vectors;
its nearest ids are then read from the user's collection, which stays the one source of truth
for text and metadata.

The invariant that keeps this exact: **every id in the user's collection is in its session's
index** (the index may hold more). Writers add to the index *before* the user's collection and
delete from it *after*, so a crash in between leaves at most stale ids in the index, which a
search drops when the user's collection does not have them. A user's collection made before
the indexes existed is indexed once when first opened, and marked as indexed only when done.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from deltamem_agents.memory.textlog_collections import (
    _missing,
    delete_collection_if_present,
    on_fresh_handle,
)

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

INDEXED_MARK = "deltamem:session_index"  # set on a user's collection whose sessions are all indexed
SESSION_KEY = "deltamem:session_id"  # set on an index collection (a user's collection never has it)
SESSION_MARK = "-s"  # an index is named <user collection>-s<24 hex digits of sha256(session_id)>
_T = TypeVar("_T")


class SessionIndexes:
    """The per-session index collections of one log's users (see the module docstring)."""

    def __init__(
        self, client: ClientAPI, user_collection_name: Callable[[str], str], *, log_name: str, distance: str,
        batch_size: int,
    ) -> None:
        self.client, self.log_name, self.distance = client, log_name, distance
        self._user_collection_name = user_collection_name
        self.batch_size = max(1, batch_size)
        self._open: dict[tuple[str, str], Collection] = {}

    def name(self, user_id: str, session_id: str) -> str:
        digest = hashlib.sha256(session_id.encode()).hexdigest()[:24]
        return f"{self._user_collection_name(user_id)}{SESSION_MARK}{digest}"

    def _get(self, user_id: str, session_id: str, *, create: bool) -> Collection | None:
        key = (user_id, session_id)
        cached = self._open.get(key)
        if cached is not None:
            return cached
        if create:
            collection = self.client.get_or_create_collection(
                name=self.name(user_id, session_id),
                configuration={"hnsw": {"space": self.distance}},
                metadata={"deltamem:log": self.log_name, "deltamem:index_of": self._user_collection_name(user_id),
                          SESSION_KEY: session_id},
                embedding_function=None,
            )
        else:
            try:
                collection = self.client.get_collection(self.name(user_id, session_id), embedding_function=None)
            except _missing():
                return None
        self._open[key] = collection
        return collection

    def _on(self, user_id: str, session_id: str, op: Callable[[Collection], _T], *, create: bool, default: _T) -> _T:
        return on_fresh_handle(lambda: self._get(user_id, session_id, create=create),
                               lambda: self._open.pop((user_id, session_id), None), op, default)

    # -- keeping the invariant --------------------------------------------------------------------
    def add(self, user_id: str, session_id: str, ids: Sequence[str], vectors: Sequence[Any]) -> None:
        """Index ``ids`` (call before they are written to the user's collection)."""
        for start in range(0, len(ids), self.batch_size):
            part = slice(start, start + self.batch_size)
            self._on(user_id, session_id, lambda c, p=part: c.upsert(ids=list(ids[p]), embeddings=list(vectors[p])),
                     create=True, default=None)

    def add_rows(self, user_id: str, ids: Sequence[str], metadatas: Sequence[Any], vectors: Sequence[Any]) -> None:
        """`add` for rows of several sessions (each row's ``session_id`` metadata says which)."""
        for session_id, rows in _by_session(metadatas).items():
            self.add(user_id, session_id, [ids[r] for r in rows], [vectors[r] for r in rows])

    def remove_rows(self, user_id: str, ids: Sequence[str], metadatas: Sequence[Any]) -> None:
        """`remove` for rows of several sessions."""
        for session_id, rows in _by_session(metadatas).items():
            self.remove(user_id, session_id, [ids[r] for r in rows])

    def remove(self, user_id: str, session_id: str, ids: Sequence[str]) -> None:
        """Forget ``ids`` (call after they left the user's collection)."""
        for start in range(0, len(ids), self.batch_size):
            part = list(ids[start : start + self.batch_size])
            self._on(user_id, session_id, lambda c, p=part: c.delete(ids=p), create=False, default=None)

    def drop(self, user_id: str, session_id: str) -> None:
        self._drop_named(self.name(user_id, session_id))

    def drop_user(self, user_id: str) -> None:
        """Every index of one user (after the user's collection is gone)."""
        own = self._user_collection_name(user_id)
        for collection in self._indexes(lambda meta: meta.get("deltamem:index_of") == own):
            self._drop_named(collection.name)

    def drop_all(self) -> None:
        for collection in self._indexes(lambda meta: True):
            self._drop_named(collection.name)

    def _drop_named(self, name: str) -> None:
        self._open = {k: c for k, c in self._open.items() if c.name != name}
        delete_collection_if_present(self.client, name)

    def _indexes(self, keep: Callable[[dict[str, Any]], bool]) -> list[Collection]:
        found = []
        for collection in self.client.list_collections():
            meta = collection.metadata or {}
            if meta.get("deltamem:log") == self.log_name and SESSION_KEY in meta and keep(meta):
                found.append(collection)
        return found

    # -- reading ----------------------------------------------------------------------------------
    def nearest(self, user_id: str, session_id: str, vector: Any, n: int) -> list[tuple[str, float]]:
        """(id, distance) of the ``n`` indexed ids nearest to ``vector``, closest first; the ids
        still have to be confirmed in the user's collection (the index may hold stale ones)."""
        def query(collection: Collection) -> list[tuple[str, float]]:
            result = collection.query(query_embeddings=[vector], n_results=n, include=["distances"])
            return list(zip(result["ids"][0], (float(d) for d in (result["distances"] or [[]])[0])))

        return self._on(user_id, session_id, query, create=False, default=[])

    def ids(self, user_id: str, session_id: str) -> list[str]:
        """Every indexed id of the session (a superset of its entries)."""
        return self._on(user_id, session_id, lambda c: list(c.get(include=[])["ids"]), create=False, default=[])

    # -- indexing a collection written before the indexes ------------------------------------------
    def ensure_indexed(self, user_collection: Collection) -> None:
        """Index every entry of a user's collection that is not marked as indexed, then mark it.
        Interrupted, it starts over at the next open (the upserts are idempotent)."""
        meta = dict(user_collection.metadata or {})
        if meta.get(INDEXED_MARK):
            return
        user_id = meta.get("deltamem:user_id")
        if not isinstance(user_id, str):
            return
        step, offset = min(self.batch_size, 1000), 0
        while True:
            batch: Any = user_collection.get(limit=step, offset=offset, include=["metadatas", "embeddings"])
            if not batch["ids"]:
                break
            self.add_rows(user_id, batch["ids"], batch["metadatas"] or [], batch["embeddings"])
            offset += len(batch["ids"])
        meta[INDEXED_MARK] = 1
        user_collection.modify(metadata=meta)


def _by_session(metadatas: Sequence[Any]) -> dict[str, list[int]]:
    """session id -> the rows (positions) of that session."""
    rows: dict[str, list[int]] = {}
    for row, meta in enumerate(metadatas):
        rows.setdefault(str((meta or {}).get("session_id", "")), []).append(row)
    return rows


__all__ = ["INDEXED_MARK", "SessionIndexes"]
