"""`DeltaMemStore`: a LangGraph `BaseStore` kept in deltamem's hybrid memory.

LangGraph agents keep long-term memory in a store (``graph.compile(store=...)``; nodes and tools
read it through ``runtime.store`` / an injected ``store``). This store keeps every item in a
`HybridMemory`: the item's text is written through the memory verbs (`add`, `update`, `delete`),
so it lands in the verbatim Chroma log (searchable, filterable) *and* in the δ-mem state of a
session that belongs to the item's namespace.

Namespace mapping (see `namespace_scope`): ``namespace[0]`` is the ``user_id``; the rest names
the session (``lg-store`` for a one-label namespace, ``lg-store.a.b`` for ``(user, "a", "b")``;
labels that are not valid ids are hashed). Every log entry also carries the namespace labels,
the key, the JSON of the value and the store's timestamps as metadata (``store.*``), so get,
namespace-prefix search, value filters and namespace listing are Chroma ``where`` queries; only
what Chroma cannot express (non-string filters, suffix and wildcard matches, TTL expiry) is
checked here in Python on what those queries return.

TTL lives in this module (`ttl_metadata`, `is_expired`) until the core stores expiry itself.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from deltamem_agents.memory.textlog import TextLog
from deltamem_agents.store.records import ID_PATTERN, SessionKey
from langgraph.store.base import (
    BaseStore,
    GetOp,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    get_text_at_path,
    validate_op_namespace,
)

from langchain_deltamem._store_layout import (
    _CREATED,
    _EXPIRES,
    _FIELD,
    _INDEXED,
    _ITEM,
    _KEY,
    _NS,
    _NS_LEN,
    _TEXT_SHA,
    _TTL,
    _UPDATED,
    _VALUE,
    _check_filter,
    _check_namespace,
    _dump_value,
    _entries,
    _Entry,
    _field_key,
    _label,
    _matches,
    _namespace_matches,
    _pushdown,
    _sha,
    _where,
    is_expired,
    namespace_scope,
    ttl_metadata,
)

if TYPE_CHECKING:
    from deltamem_agents.memory.hybrid import HybridMemory

__all__ = ["DeltaMemStore", "InvalidNamespaceError", "is_expired", "namespace_scope", "ttl_metadata"]



class DeltaMemStore(BaseStore):
    """A LangGraph store whose items live in a `HybridMemory` (text log + δ-mem state).

    ``memory``: the `HybridMemory` (it needs a text log). ``index_fields``: the value paths
    whose text is embedded when ``put`` gives no ``index`` (default ``["$"]``: the whole value's
    JSON), as LangGraph's ``IndexConfig["fields"]``; the embedding model is the log's. ``ttl``:
    a LangGraph `TTLConfig` (``default_ttl`` minutes, ``refresh_on_read``;
    ``sweep_interval_minutes`` is used by `start_ttl_sweeper`). ``session_prefix``: how the
    store's session ids start (see `namespace_scope`). ``clock``: the current time (tests).
    """

    supports_ttl: bool = True

    def __init__(
        self,
        memory: HybridMemory,
        *,
        index_fields: Sequence[str] | None = None,
        ttl: TTLConfig | None = None,
        session_prefix: str = "lg-store",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if memory.textlog is None:
            raise ValueError("DeltaMemStore needs a HybridMemory with a text log (textlog=None keeps no items)")
        if not ID_PATTERN.fullmatch(session_prefix) or "." in session_prefix:
            raise ValueError(f"session_prefix {session_prefix!r} must be a valid session id without '.'")
        fields = list(index_fields) if index_fields is not None else ["$"]
        if not fields or not all(isinstance(f, str) and f for f in fields):
            raise ValueError(f"index_fields must be a non-empty list of value paths, got {index_fields!r}")
        if ttl is not None and (ttl.get("default_ttl") is not None and not (ttl["default_ttl"] > 0)):
            raise ValueError(f"ttl['default_ttl'] must be minutes > 0 or None, got {ttl.get('default_ttl')!r}")
        self.memory = memory
        self.index_fields = fields
        self.ttl_config = ttl
        self.session_prefix = session_prefix
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.RLock()
        self._sweeper: threading.Thread | None = None
        self._stop_sweeper = threading.Event()

    @classmethod
    def from_defaults(
        cls,
        model: str | None = None,
        *,
        adapter: str | Path | Literal["auto"] | None = "auto",
        store: str | Path | None = None,
        textlog_path: str | Path | None = None,
        device: str | None = None,
        dtype: str | None = None,
        **kwargs: Any,
    ) -> DeltaMemStore:
        """A store on the process's shared runtime and text log (the same ones `DeltaMemLLM`
        uses for these settings; default folders under ``$DELTAMEM_HOME``)."""
        from deltamem_agents.memory.shared import shared_memory, shared_runtime

        runtime = shared_runtime(model, adapter=adapter, store=store, device=device, dtype=dtype)
        return cls(shared_memory(runtime, textlog_path), **kwargs)

    @property
    def textlog(self) -> TextLog:
        assert self.memory.textlog is not None
        return self.memory.textlog

    def scope(self, namespace: tuple[str, ...]) -> SessionKey:
        """The user and session that hold ``namespace``'s items (`namespace_scope`)."""
        return namespace_scope(tuple(namespace), session_prefix=self.session_prefix)

    # -- batch ------------------------------------------------------------------------------------------
    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run the ops in order. All are checked before any runs, so a bad op changes nothing;
        several puts to one key in one batch collapse into the last (each rewrite of an item
        replays its session's δ-state, so the earlier ones would be wasted work)."""
        ops = list(ops)
        for op in ops:
            self._check_op(op)
        last_put = {(tuple(op.namespace), op.key): i for i, op in enumerate(ops) if isinstance(op, PutOp)}
        results: list[Result] = []
        with self._lock:
            for i, op in enumerate(ops):
                if isinstance(op, GetOp):
                    results.append(self._get(op))
                elif isinstance(op, SearchOp):
                    results.append(self._search(op))
                elif isinstance(op, ListNamespacesOp):
                    results.append(self._list_namespaces(op))
                else:
                    if last_put[(tuple(op.namespace), op.key)] == i:
                        self._put(op)
                    results.append(None)
        return results

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """`batch` in one worker thread (the session locks belong to the thread that takes them)."""
        return await asyncio.to_thread(self.batch, list(ops))

    def _check_op(self, op: Any) -> None:
        if not isinstance(op, GetOp | PutOp | SearchOp | ListNamespacesOp):
            raise ValueError(f"unknown store operation {type(op).__name__}: expected GetOp, PutOp, SearchOp or ListNamespacesOp")
        if isinstance(op, GetOp | PutOp):
            _check_namespace(op.namespace)
            if not isinstance(op.key, str):
                raise ValueError(f"a store key must be a string, got {type(op.key).__name__} {op.key!r}")
        elif isinstance(op, SearchOp):
            _check_namespace(op.namespace_prefix, what="namespace prefix")
            for name, n in (("limit", op.limit), ("offset", op.offset)):
                if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                    raise ValueError(f"search {name} must be an int >= 0, got {n!r}")
            if op.query is not None and not isinstance(op.query, str):
                raise ValueError(f"search query must be a string or None, got {type(op.query).__name__}")
            _check_filter(op.filter)
        else:
            for condition in op.match_conditions or ():
                _check_namespace(condition.path, what=f"{condition.match_type} path")
            for name, n in (("limit", op.limit), ("offset", op.offset), ("max_depth", op.max_depth)):
                if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
                    raise ValueError(f"list_namespaces {name} must be an int >= 0, got {n!r}")
        validate_op_namespace(op)  # labels: strings, non-empty, no '.' or NUL
        if isinstance(op, PutOp):
            if not op.namespace:
                raise InvalidNamespaceError("cannot put into the empty namespace: its first label is the user_id")
            if op.namespace[0] == "langgraph":
                raise InvalidNamespaceError(f'the root label of a namespace cannot be "langgraph", got {op.namespace}')
            if op.value is not None:
                _dump_value(op.value, op.key)
            if op.ttl is not None and (isinstance(op.ttl, bool) or not isinstance(op.ttl, int | float)
                                       or not math.isfinite(op.ttl) or op.ttl <= 0):
                raise ValueError(f"ttl must be minutes > 0 or None, got {op.ttl!r}")
            if op.index not in (None, False) and (not isinstance(op.index, list | tuple)
                                                   or not all(isinstance(p, str) and p for p in op.index)):
                raise ValueError(f"index must be False, None or a list of value paths, got {op.index!r}")

    # -- reading ----------------------------------------------------------------------------------------
    def _fetch(self, clauses: list[dict[str, Any]]) -> list[_Entry]:
        found = self.textlog.find(_where([{_ITEM: True}, *clauses]), user_id=self._user_of(clauses))
        return _entries([h.id for h in found], [h.metadata for h in found])

    def _user_of(self, clauses: list[dict[str, Any]]) -> str | None:
        """The user whose collection holds every item the clauses can match (the namespace's first
        label names it), or None: then every user's collection is asked."""
        for clause in clauses:
            first = clause.get(_label(0)) if len(clause) == 1 else None
            if first is None and len(clause) == 1 and isinstance(clause.get(_NS), str):
                first = (json.loads(clause[_NS]) or [None])[0]
            if isinstance(first, str):
                return self.scope((first,)).user_id
        return None

    def _entry(self, namespace: tuple[str, ...], key: str) -> _Entry | None:
        """The item at namespace/key, expired or not (one entry per key: puts keep it so)."""
        entries = self._fetch([{_NS: json.dumps(list(namespace))}, {_KEY: key}])
        return entries[0] if entries else None

    def _item(self, entry: _Entry, *, score: float | None = None, search: bool = False) -> Item:
        meta = entry.metadata
        args = dict(namespace=entry.namespace, key=entry.key, value=entry.value,
                    created_at=datetime.fromisoformat(meta[_CREATED]), updated_at=datetime.fromisoformat(meta[_UPDATED]))
        return SearchItem(**args, score=score) if search else Item(**args)  # type: ignore[arg-type]

    def _refresh(self, entries: list[_Entry], refresh: bool) -> None:
        """Restart the TTL of items that were read (``refresh_ttl``); metadata only."""
        if not refresh:
            return
        now = self._clock()
        for entry in entries:
            ttl = entry.metadata.get(_TTL)
            if ttl is not None:
                self._patch(entry, ttl_metadata(float(ttl), now))

    def _get(self, op: GetOp) -> Item | None:
        if not op.namespace:
            return None
        entry = self._entry(tuple(op.namespace), op.key)
        if entry is None or is_expired(entry.metadata, self._clock()):
            return None
        self._refresh([entry], op.refresh_ttl)
        return self._item(entry)

    def _prefix_clauses(self, prefix: tuple[str, ...], *, wildcard: bool = False) -> list[dict[str, Any]]:
        clauses: list[dict[str, Any]] = [{_label(i): label} for i, label in enumerate(prefix) if not (wildcard and label == "*")]
        if prefix:
            clauses.append({_NS_LEN: {"$gte": len(prefix)}})
        return clauses

    def _search(self, op: SearchOp) -> list[SearchItem]:
        prefix = tuple(op.namespace_prefix)
        clauses = [*self._prefix_clauses(prefix), *_pushdown(op.filter)]
        now = self._clock()

        def keep(entry: _Entry) -> bool:
            return not is_expired(entry.metadata, now) and all(
                _matches(entry.value.get(k), v) for k, v in (op.filter or {}).items())

        if not op.query:
            listed = sorted((e for e in self._fetch(clauses) if keep(e)),
                            key=lambda e: (e.metadata[_CREATED], e.metadata[_NS], e.key))
            page = listed[op.offset: op.offset + op.limit]
            self._refresh(page, op.refresh_ttl)
            return [self._item(e, search=True) for e in page]  # type: ignore[misc]
        scored = self._ranked(op.query, clauses, keep, op.offset + op.limit)[op.offset:]
        items: list[tuple[_Entry, float | None]] = [(e, self._score(e.distance)) for e in scored]
        if len(items) < op.limit:  # as InMemoryStore: items without a vector fill the page, unscored
            unindexed = sorted((e for e in self._fetch([*clauses, {_INDEXED: False}]) if keep(e)),
                               key=lambda e: (e.metadata[_CREATED], e.key))
            items += [(e, None) for e in unindexed[: op.limit - len(items)]]
        self._refresh([e for e, _ in items], op.refresh_ttl)
        return [self._item(e, score=s, search=True) for e, s in items]  # type: ignore[misc]

    def _ranked(self, query: str, clauses: list[dict[str, Any]], keep: Callable[[_Entry], bool], want: int) -> list[_Entry]:
        """The ``want`` closest live, matching items: a Chroma query over the namespace prefix,
        widened until enough items survive the checks made here (or every chunk was ranked)."""
        where = _where([{_ITEM: True}, {_INDEXED: True}, *clauses])
        user = self._user_of(clauses)
        total = len(self.textlog.find(where, user_id=user))
        if total == 0 or want == 0:
            return []
        vector = self._embed_query(query)
        users = [user] if user is not None else self.textlog.users()
        n = min(total, max(32, 4 * want))
        while True:
            found = sorted((h for u in users for h in self.textlog.nearest(vector, n, user_id=u, where=where)),
                           key=lambda h: h.distance or 0.0)[:n]
            ranked = [e for e in _entries([h.id for h in found], [h.metadata for h in found],
                                          [h.distance or 0.0 for h in found]) if keep(e)]
            if len(ranked) >= want or n >= total:
                return ranked[:want]
            n = min(total, n * 2)

    def _embed_query(self, query: str) -> Any:
        """The query vector, as `TextLog.search` embeds queries (``embed_query`` when the
        embedding function has one)."""
        ef = self.textlog.embedding_function
        embed = getattr(ef, "embed_query", None)
        return list(embed([query]) if callable(embed) else ef([query]))[0]

    def _score(self, distance: float | None) -> float | None:
        """Chroma's distance as a similarity (cosine, as InMemoryStore scores): higher is closer."""
        if distance is None:
            return None
        return 1.0 - distance / 2.0 if self.textlog.config.distance == "l2" else 1.0 - distance

    def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        conditions = list(op.match_conditions or ())
        clauses: list[dict[str, Any]] = []
        for condition in conditions:
            if condition.match_type == "prefix":
                clauses += self._prefix_clauses(tuple(condition.path), wildcard=True)
            elif condition.path:
                clauses.append({_NS_LEN: {"$gte": len(condition.path)}})
        now = self._clock()
        namespaces = {e.namespace for e in self._fetch(clauses) if not is_expired(e.metadata, now)}
        found = [ns for ns in namespaces if all(_namespace_matches(c, ns) for c in conditions)]
        if op.max_depth is not None:
            found = list({ns[: op.max_depth] for ns in found})
        return sorted(found)[op.offset: op.offset + op.limit]

    # -- writing ----------------------------------------------------------------------------------------
    def _text(self, key: str, value: Mapping[str, Any], value_json: str, index: Literal[False] | list[str] | None) -> tuple[str, bool]:
        """What is embedded and written into the δ-state: the text at the index paths, after the
        key (the key keeps two items with the same text apart: the log stores a text once per session)."""
        paths = self.index_fields if index is None else ([] if index is False else list(index))
        texts = [t for path in paths for t in get_text_at_path(dict(value), path) if t.strip()]
        if not texts:
            return f"{key}: {value_json}", False
        return f"{key}: " + "\n".join(texts), True

    def _patch(self, entry: _Entry, metadata: Mapping[str, Any]) -> None:
        """Change the metadata of an entry's chunks (never its text, so the δ-state stays right)."""
        self.textlog.patch_metadata(entry.chunk_ids, dict(metadata), user_id=entry.metadata["user_id"])

    def _put(self, op: PutOp) -> None:
        namespace, key = tuple(op.namespace), op.key
        scope = self.scope(namespace)
        with self.memory.runtime.store.lock(scope):  # find-then-write is atomic across processes
            existing = self._entry(namespace, key)
            if op.value is None:
                if existing is not None:
                    self.memory.delete(existing.memory_id, user_id=scope.user_id, call="store.delete")
                return
            now = self._clock()
            value_json = _dump_value(op.value, key)
            text, indexed = self._text(key, op.value, value_json, op.index)
            meta: dict[str, Any] = {
                _ITEM: True, _NS: json.dumps(list(namespace)), _NS_LEN: len(namespace),
                **{_label(i): label for i, label in enumerate(namespace)},
                _KEY: key, _VALUE: value_json, _TEXT_SHA: _sha(text), _INDEXED: indexed,
                _UPDATED: now.isoformat(),
            }
            meta |= {k: v for name, v in op.value.items() if isinstance(v, str) and (k := _field_key(name))}
            ttl = ttl_metadata(op.ttl, now)
            if existing is None:
                meta[_CREATED] = now.isoformat()
                meta |= {k: v for k, v in ttl.items() if v is not None}
                self.memory.add(text, session_id=scope.session_id, user_id=scope.user_id, metadata=meta, call="store.put")
                return
            meta[_CREATED] = existing.metadata[_CREATED]
            stale = {k: None for k in existing.metadata if k.startswith(_FIELD) and k not in meta}
            if existing.metadata.get(_TEXT_SHA) != meta[_TEXT_SHA]:
                # new text: the entry's message is replaced and the session's state replayed (one commit)
                self.memory.update(existing.memory_id, text, user_id=scope.user_id, call="store.put")
                existing = self._entry(namespace, key)
                assert existing is not None
            self._patch(existing, {**meta, **ttl, **stale})

    # -- TTL ----------------------------------------------------------------------------------------------
    def sweep_ttl(self) -> int:
        """Delete every expired item (its session's state is replayed without it, once per
        session); returns how many were deleted. Reads skip expired items anyway: sweeping
        frees the space and takes the text out of the δ-state."""
        now = self._clock()
        expired = self._fetch([{_EXPIRES: {"$lte": now.timestamp()}}])
        by_session: dict[tuple[str, str], list[_Entry]] = {}
        for entry in expired:
            by_session.setdefault((entry.metadata["user_id"], entry.metadata["session_id"]), []).append(entry)
        deleted = 0
        with self._lock:
            for (user_id, session_id), entries in by_session.items():
                with self.memory.runtime.store.lock(SessionKey(user_id=user_id, session_id=session_id)):
                    # again under the lock: a read may have refreshed one, a put replaced one
                    ids = [c for e in entries for c in e.chunk_ids]
                    found = self.textlog.get(ids, user_id=user_id)
                    still = [e for e in _entries([h.id for h in found], [h.metadata for h in found])
                             if is_expired(e.metadata, self._clock())]
                    if not still:
                        continue
                    self.memory.forget(session_id=session_id, user_id=user_id,
                                       ids=[c for e in still for c in e.chunk_ids], progress=False)
                    for e in still:
                        self.memory.audit.record("DELETE", memory_id=e.memory_id, user_id=user_id, session_id=session_id,
                                                 call="store.sweep_ttl", old_text=e.metadata[_VALUE])
                    deleted += len(still)
        return deleted

    prune_expired = sweep_ttl

    def start_ttl_sweeper(self, interval_minutes: float | None = None) -> threading.Thread:
        """Sweep in a daemon thread every ``interval_minutes`` (default: the TTL config's
        ``sweep_interval_minutes``); `stop_ttl_sweeper` ends it."""
        minutes = interval_minutes if interval_minutes is not None else (self.ttl_config or {}).get("sweep_interval_minutes")
        if minutes is None or not minutes > 0:
            raise ValueError("start_ttl_sweeper needs interval_minutes > 0 (or ttl={'sweep_interval_minutes': ...})")
        if self._sweeper is not None and self._sweeper.is_alive():
            return self._sweeper
        self._stop_sweeper.clear()

        def loop() -> None:
            while not self._stop_sweeper.wait(float(minutes) * 60.0):
                self.sweep_ttl()

        self._sweeper = threading.Thread(target=loop, name="deltamem-store-ttl", daemon=True)
        self._sweeper.start()
        return self._sweeper

    def stop_ttl_sweeper(self, timeout: float | None = None) -> bool:
        """Stop the sweeper thread; ``True`` if none is running any more."""
        self._stop_sweeper.set()
        if self._sweeper is not None:
            self._sweeper.join(timeout)
            if self._sweeper.is_alive():
                return False
            self._sweeper = None
        return True

    def __repr__(self) -> str:
        return f"DeltaMemStore(textlog={self.textlog!r}, session_prefix={self.session_prefix!r})"
