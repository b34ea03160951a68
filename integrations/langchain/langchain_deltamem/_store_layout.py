"""How a `DeltaMemStore` item lies in the text log: the metadata keys, the namespace → session
mapping, TTL metadata and the filters that run in Chroma (kept apart from the store's verbs)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from deltamem_agents.store.records import ID_PATTERN, SessionKey
from langgraph.store.base import (
    InvalidNamespaceError,
    MatchCondition,
)

# -- the metadata each log entry of the store carries ------------------------------------------------
_ITEM = "store.item"  # True on every entry this store wrote (chat entries of the same log lack it)
_NS = "store.ns"  # JSON list of the namespace labels (exact namespace match, and to rebuild the tuple)
_NS_LEN = "store.ns_len"  # number of labels (prefix queries need namespaces at least that deep)
_KEY = "store.key"
_VALUE = "store.value"  # the value's JSON, returned as it was put
_TEXT_SHA = "store.text_sha"  # hash of the text written into log and state: a put with the same text only patches metadata
_INDEXED = "store.indexed"  # False for put(index=False) or no text at the index paths: searched without a score
_CREATED = "store.created_at"
_UPDATED = "store.updated_at"
_TTL = "store.ttl_minutes"
_EXPIRES = "store.expires_at"  # POSIX seconds
_FIELD = "store.v."  # top-level string fields of the value, so string filters run in Chroma
_METADATA_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")  # what `HybridMemory.add(metadata=...)` accepts


def _label(i: int) -> str:
    return f"store.ns.{i}"


def _field_key(name: str) -> str | None:
    key = _FIELD + name
    return key if _METADATA_KEY.fullmatch(key) else None


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def namespace_scope(namespace: tuple[str, ...], *, session_prefix: str = "lg-store") -> SessionKey:
    """The session that holds a namespace's items: ``user_id = namespace[0]``, and a session id
    made from the other labels. Labels that are not valid ids are replaced by a hash, so any
    namespace LangGraph allows maps somewhere; the exact labels are kept in the entries'
    metadata, so two namespaces never read each other's items even if they share a session."""
    if not namespace:
        raise InvalidNamespaceError("a namespace needs at least one label (its first label is the user_id)")
    first, rest = namespace[0], namespace[1:]
    user_id = first if ID_PATTERN.fullmatch(first) and ".." not in first else f"h-{_sha(first)[:32]}"
    # labels cannot contain '.', so joining with '.' is unambiguous; the hashed form starts
    # '<prefix>-h-', which no joined form does
    joined = ".".join((session_prefix, *rest))
    session_id = joined if ID_PATTERN.fullmatch(joined) else f"{session_prefix}-h-{_sha(json.dumps(list(rest)))[:32]}"
    return SessionKey(user_id=user_id, session_id=session_id)


# -- TTL, kept here until HybridMemory.add(ttl_seconds=...) stores the expiry itself ------------------
def ttl_metadata(ttl_minutes: float | None, now: datetime) -> dict[str, float | None]:
    """The entry metadata that makes an item expire ``ttl_minutes`` after ``now`` (``None``
    values remove a TTL the entry had). Switching to the core TTL replaces this function and
    `is_expired`."""
    if ttl_minutes is None:
        return {_TTL: None, _EXPIRES: None}
    return {_TTL: float(ttl_minutes), _EXPIRES: now.timestamp() + float(ttl_minutes) * 60.0}


def is_expired(metadata: Mapping[str, Any], now: datetime) -> bool:
    """Whether an entry's TTL has run out (entries without a TTL never expire)."""
    expires = metadata.get(_EXPIRES)
    return expires is not None and float(expires) <= now.timestamp()


# -- value filters, as LangGraph's InMemoryStore compares them ----------------------------------------
def _matches(value: Any, wanted: Any) -> bool:
    if isinstance(wanted, dict):
        if any(k.startswith("$") for k in wanted):
            return all(_operator(value, op, arg) for op, arg in wanted.items())
        return isinstance(value, dict) and all(_matches(value.get(k), v) for k, v in wanted.items())
    if isinstance(wanted, list | tuple):
        return (isinstance(value, list | tuple) and len(value) == len(wanted)
                and all(_matches(a, b) for a, b in zip(value, wanted, strict=True)))
    return bool(value == wanted)


def _operator(value: Any, op: str, arg: Any) -> bool:
    if op == "$eq":
        return bool(value == arg)
    if op == "$ne":
        return bool(value != arg)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        if value is None or isinstance(value, dict | list):
            return False
        try:
            a, b = float(value), float(arg)
        except (TypeError, ValueError):
            return False
        return {"$gt": a > b, "$gte": a >= b, "$lt": a < b, "$lte": a <= b}[op]
    raise ValueError(f"unsupported filter operator {op!r}: use $eq, $ne, $gt, $gte, $lt or $lte")


def _check_filter(flt: Any) -> None:
    if flt is None:
        return
    if not isinstance(flt, Mapping):
        raise ValueError(f"filter must be a dict of value fields, got {type(flt).__name__}")

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                if isinstance(k, str) and k.startswith("$") and k not in ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte"):
                    raise ValueError(f"unsupported filter operator {k!r}: use $eq, $ne, $gt, $gte, $lt or $lte")
                walk(v)

    walk(flt)


def _pushdown(flt: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The part of a filter Chroma can run exactly: string equality on top-level fields (the
    Python check runs on every candidate anyway, so this only narrows what is fetched)."""
    clauses: list[dict[str, Any]] = []
    for name, wanted in (flt or {}).items():
        if isinstance(wanted, Mapping) and set(wanted) == {"$eq"}:
            wanted = wanted["$eq"]
        key = _field_key(name) if isinstance(name, str) else None
        if key is not None and isinstance(wanted, str):
            clauses.append({key: wanted})
    return clauses


def _where(clauses: list[dict[str, Any]]) -> dict[str, Any]:
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _dump_value(value: Any, key: str) -> str:
    """The value's JSON; a clear error for what a store cannot keep exactly."""
    if not isinstance(value, Mapping):
        raise ValueError(
            f"the value put at key {key!r} must be a dict (a Mapping with string keys), or None to delete; "
            f"got {type(value).__name__}"
        )

    def keys(node: Any, where: str) -> None:
        if isinstance(node, Mapping):
            bad = [k for k in node if not isinstance(k, str)]
            if bad:
                raise ValueError(f"the value put at key {key!r} has non-string keys {bad[:3]!r} at {where}: JSON keys are strings")
            for k, v in node.items():
                keys(v, f"{where}.{k}")
        elif isinstance(node, list | tuple):
            for i, v in enumerate(node):
                keys(v, f"{where}[{i}]")

    keys(value, "$")
    try:
        return json.dumps(dict(value), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the value put at key {key!r} is not JSON-serializable ({exc})") from exc


def _check_namespace(namespace: Any, *, what: str = "namespace") -> None:
    if isinstance(namespace, str) or not isinstance(namespace, tuple | list):
        raise InvalidNamespaceError(f"a {what} must be a tuple of strings, like ('ada', 'memories'); got {namespace!r}")


@dataclass
class _Entry:
    """One item as the log holds it: its memory id, its chunks, and the metadata they share."""

    memory_id: str
    chunk_ids: list[str]
    metadata: dict[str, Any]
    distance: float | None = None

    @property
    def namespace(self) -> tuple[str, ...]:
        return tuple(json.loads(self.metadata[_NS]))

    @property
    def key(self) -> str:
        return str(self.metadata[_KEY])

    @property
    def value(self) -> dict[str, Any]:
        return dict(json.loads(self.metadata[_VALUE]))


def _entries(ids: Sequence[str], metadatas: Sequence[Mapping[str, Any] | None],
             distances: Sequence[float] | None = None) -> list[_Entry]:
    """Chunks grouped into entries, in the order of each entry's first (closest) chunk."""
    out: dict[str, _Entry] = {}
    for n, (chunk_id, meta) in enumerate(zip(ids, metadatas, strict=True)):
        meta = dict(meta or {})
        memory_id = meta.get("memory_id") or chunk_id.rsplit("-", 1)[0]
        entry = out.get(memory_id)
        if entry is None:
            out[memory_id] = _Entry(memory_id, [chunk_id], meta, None if distances is None else float(distances[n]))
        else:
            entry.chunk_ids.append(chunk_id)
    return list(out.values())


def _namespace_matches(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    """A namespace against a prefix/suffix condition ('*' matches any label), as InMemoryStore does."""
    path = tuple(condition.path)
    if len(namespace) < len(path):
        return False
    pairs = zip(namespace, path, strict=False) if condition.match_type == "prefix" else zip(
        reversed(namespace), reversed(path), strict=False)
    if condition.match_type not in ("prefix", "suffix"):
        raise ValueError(f"unsupported match type {condition.match_type!r}: use 'prefix' or 'suffix'")
    return all(p == "*" or n == p for n, p in pairs)


__all__ = ["is_expired", "namespace_scope", "ttl_metadata"]
