"""`RedisSessionStore`: sessions in Redis, so several server processes on several machines
share one memory.

Per session (``<prefix>session:<user>/<session>:<part>``):

- ``meta``: the commit record (`SessionMetadata` JSON), the same bytes ``meta.json`` holds;
- ``log``: a list, one JSONL entry per message, hash-chained exactly like ``messages.jsonl``;
- ``state``: the committed OSAM state as safetensors bytes;
- ``lock``: the lease of the process holding the session (an owner token with a TTL).

``<prefix>sessions`` is a sorted set of ``user/session`` for `list`. A commit is one
``WATCH meta`` + ``MULTI``/``EXEC``: it appends the log, replaces the state and the metadata
together, and fails with `SessionConflictError` if the session moved on since ``record`` was
loaded. Loading reads meta, state and log in one ``MULTI`` (a consistent snapshot) and verifies
them with the same helpers as `DirectorySessionStore` (schema, fingerprint, checksum, chain).

`lock` is a lease: ``SET lock token NX PX ttl``, renewed every ``ttl/3`` by one background
thread per process while held (so a long turn keeps it), released by a compare-and-delete
script (so a holder whose lease expired cannot delete its successor's), reentrant in the holding
thread. A holder that dies stops renewing and its lease expires after at most ``lease_ttl``
seconds. Redis Cluster is not supported (a commit spans the session's keys and the index).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field

from deltamem_agents.errors import UnavailableError
from deltamem_agents.store.base import (
    SessionConflictError,
    SessionCorruptError,
    SessionLockTimeout,
    SessionStore,
    SessionStoreError,
)
from deltamem_agents.store.codec import (
    after_commit,
    after_rewrite,
    as_messages,
    check_current,
    check_fingerprint,
    decode_log,
    decode_state,
    encode_log,
    exists_error,
    not_found_for_commit,
    parse_metadata,
    state_name,
)
from deltamem_agents.store.records import (
    ChatMessage,
    Fingerprint,
    SessionKey,
    SessionMetadata,
    SessionRecord,
    utc_now,
    validate_id,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    import redis

    from deltamem_agents.core.state import DeltaMemState

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'deltamem-agents[redis]'"
DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PREFIX = "deltamem:"
DEFAULT_LEASE_TTL_S = 30.0

# Delete / extend the lock only if it still holds our token: an expired holder must never
# touch the lease a newer holder took after it.
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"


class RedisNotInstalledError(SessionStoreError, UnavailableError, ImportError):
    """The `redis` client package is missing (a `SessionStoreError`, so the CLI prints one line)."""


def import_redis() -> Any:
    """The `redis` package, or an error that says how to install it."""
    try:
        import redis
    except ImportError as exc:
        raise RedisNotInstalledError(f"the Redis session store needs the `redis` package: {INSTALL_HINT}") from exc
    return redis


class SessionLeaseLost(SessionConflictError):
    """The lock's lease expired while held (the holder stalled longer than ``lease_ttl``), and
    the session may have been taken by another process: the turn is not committed."""


class RedisStoreConfig(BaseModel):
    """How to reach Redis and name the keys; also readable from a URL's query string
    (``redis://host:6379/0?prefix=prod:&lease_ttl=10&lock_timeout=120``)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(DEFAULT_URL, description="redis://, rediss:// (TLS) or unix:// URL of the Redis server")
    prefix: str = Field(DEFAULT_PREFIX, min_length=1, max_length=200, description="namespace of every key")
    lease_ttl: float = Field(
        DEFAULT_LEASE_TTL_S, gt=0.0, le=3600.0,
        description="seconds a lock outlives its holder; renewed every third of it while held",
    )
    lock_timeout: float | None = Field(None, ge=0.0, description="default wait for a session's lock (None: forever)")


def redact_url(url: str) -> str:
    """``url`` without its password (for logs and messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.username:
        netloc = f"{parts.username}:***@{netloc}"
    else:
        netloc = f":***@{netloc}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


# -- leases -------------------------------------------------------------------------------------
@dataclass
class _Lease:
    client: Any
    name: str
    token: str
    ttl_ms: int
    key: SessionKey
    depth: int = 1
    lost: bool = False
    released: bool = False
    due: float = 0.0  # time.monotonic() of the next renewal


class _Leases:
    """Every lease this process holds, and the one daemon thread that renews them.

    Keyed by (thread, server, lock key): the lock is reentrant in the holding thread, also
    through another `RedisSessionStore` object on the same server (as `DirectorySessionStore`
    is through another object on the same folder)."""

    def __init__(self) -> None:
        self._held: dict[tuple[int, str, str], _Lease] = {}
        self._guard = threading.Condition()
        self._thread: threading.Thread | None = None

    def get(self, ident: tuple[int, str, str]) -> _Lease | None:
        with self._guard:
            return self._held.get(ident)

    def held_by_thread(self, server: str, name: str) -> _Lease | None:
        return self.get((threading.get_ident(), server, name))

    def add(self, ident: tuple[int, str, str], lease: _Lease) -> None:
        with self._guard:
            lease.due = time.monotonic() + lease.ttl_ms / 3000.0
            self._held[ident] = lease
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._renew_forever, name="deltamem-redis-leases", daemon=True)
                self._thread.start()
            self._guard.notify_all()

    def remove(self, ident: tuple[int, str, str]) -> None:
        with self._guard:
            lease = self._held.pop(ident, None)
            if lease is not None:
                lease.released = True  # before its key is deleted: a renewal racing the release is no loss

    def _renew_forever(self) -> None:
        """Renew each lease a third of its TTL after it was taken or last renewed (a new lease
        wakes this thread only to recompute the next due time, not to renew everything)."""
        while True:
            with self._guard:
                while not self._held:
                    self._guard.wait()
                now = time.monotonic()
                due = [lease for lease in self._held.values() if lease.due <= now]
                if not due:
                    self._guard.wait(min(lease.due for lease in self._held.values()) - now)
                    continue
                for lease in due:
                    lease.due = now + lease.ttl_ms / 3000.0
            for lease in due:
                self._renew(lease)

    @staticmethod
    def _renew(lease: _Lease) -> None:
        if lease.lost or lease.released:
            return
        try:
            extended = lease.client.eval(_RENEW, 1, lease.name, lease.token, lease.ttl_ms)
        except Exception as exc:  # noqa: BLE001 - a network error must not kill the renewer
            logger.warning("could not renew the lease of session %s (will retry): %s", lease.key, exc)
            return
        if not extended and not lease.released:
            lease.lost = True
            logger.warning(
                "the lease of session %s expired while held (this process stalled for longer than its TTL); "
                "its turn will not be committed", lease.key,
            )


_LEASES = _Leases()


# -- the store ----------------------------------------------------------------------------------
class RedisSessionStore(SessionStore):
    """Sessions in one Redis server (or a primary behind Sentinel), shared by many processes.

    ``client`` is a URL (``redis://``, ``rediss://``, ``unix://``) or a ``redis.Redis`` made
    with ``decode_responses=False``. ``lock_timeout=None`` waits forever for a lock.
    """

    def __init__(
        self,
        client: str | redis.Redis = DEFAULT_URL,
        *,
        prefix: str = DEFAULT_PREFIX,
        lease_ttl: float = DEFAULT_LEASE_TTL_S,
        lock_timeout: float | None = None,
        check: bool = True,
    ) -> None:
        redis_module = import_redis()
        config = RedisStoreConfig(
            url=client if isinstance(client, str) else DEFAULT_URL, prefix=prefix, lease_ttl=lease_ttl,
            lock_timeout=lock_timeout,
        )
        self.prefix, self.lease_ttl, self.lock_timeout = config.prefix, config.lease_ttl, config.lock_timeout
        if isinstance(client, str):
            self.url = client
            self.client = redis_module.Redis.from_url(client, decode_responses=False)
        else:
            self.client = client
            kwargs = client.connection_pool.connection_kwargs
            if kwargs.get("path"):
                self.url = f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
            else:
                self.url = f"redis://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
        self._server = redact_url(self.url)
        self._redis = redis_module
        self._release = self.client.register_script(_RELEASE)
        if check:
            try:
                self.client.ping()
            except redis_module.RedisError as exc:
                raise SessionStoreError(
                    f"cannot reach the Redis session store at {self._server}: {exc}; start redis-server "
                    "(or fix the URL, e.g. redis://HOST:6379/0)"
                ) from exc

    @classmethod
    def from_config(cls, config: RedisStoreConfig, *, check: bool = True) -> RedisSessionStore:
        return cls(config.url, prefix=config.prefix, lease_ttl=config.lease_ttl, lock_timeout=config.lock_timeout, check=check)

    def __repr__(self) -> str:
        return f"RedisSessionStore({self._server!r}, prefix={self.prefix!r})"

    @property
    def location(self) -> str:
        return f"{self._server} (prefix {self.prefix!r})"

    # -- key names --------------------------------------------------------------------------
    def key_name(self, key: SessionKey | str, part: str) -> str:
        """The Redis key of one part (``meta``, ``log``, ``state``, ``lock``) of a session."""
        key = SessionKey.parse(key)
        return f"{self.prefix}session:{key.user_id}/{key.session_id}:{part}"

    @property
    def index_name(self) -> str:
        return f"{self.prefix}sessions"

    def _source(self, key: SessionKey, part: str) -> str:
        what = {"meta": "metadata", "log": "message log", "state": "state"}[part]
        return f"{what} at redis key {self.key_name(key, part)!r}"

    # -- locking ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, key: SessionKey | str, timeout: float | None = None) -> Iterator[SessionKey]:
        key = SessionKey.parse(key)
        name = self.key_name(key, "lock")
        ident = (threading.get_ident(), self._server, name)
        held = _LEASES.get(ident)
        if held is not None:  # reentrant in the holding thread
            held.depth += 1
            try:
                yield key
            finally:
                held.depth -= 1
            return
        wait = timeout if timeout is not None else self.lock_timeout
        deadline = None if wait is None else time.monotonic() + wait
        token = secrets.token_hex(16)
        ttl_ms = max(1, int(self.lease_ttl * 1000))
        delay = 0.002
        while not self.client.set(name, token, nx=True, px=ttl_ms):
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise SessionLockTimeout(
                    f"session {key} is locked by another process or thread (waited {wait}s for redis key {name!r}); "
                    f"retry later, or pass a longer timeout to lock(); a dead holder's lease expires within "
                    f"{self.lease_ttl:g}s"
                )
            time.sleep(delay if deadline is None else max(0.0, min(delay, deadline - now)))
            delay = min(delay * 2, 0.05)
        lease = _Lease(client=self.client, name=name, token=token, ttl_ms=ttl_ms, key=key)
        _LEASES.add(ident, lease)
        try:
            yield key
        finally:
            _LEASES.remove(ident)
            try:
                released = self._release(keys=[name], args=[token])
            except self._redis.RedisError as exc:
                released = 1  # not ours to judge: the lease expires by itself
                logger.warning("could not release the lock of session %s (it expires within %ss): %s", key, self.lease_ttl, exc)
            if not released and not lease.lost:
                logger.warning("the lease of session %s had expired before it was released", key)

    def _check_lease(self, key: SessionKey) -> None:
        """Before a commit: if this thread holds the session's lock, its lease must be alive."""
        name = self.key_name(key, "lock")
        lease = _LEASES.held_by_thread(self._server, name)
        if lease is None:
            return
        current = self.client.get(name)
        if lease.lost or current is None or current.decode() != lease.token:
            lease.lost = True
            raise SessionLeaseLost(
                f"cannot commit to session {key}: this process's lease on it expired while the turn ran "
                f"(longer than lease_ttl={self.lease_ttl:g}s without renewal), so another process may "
                "hold it now; load the session again and redo the turn"
            )

    # -- queries ----------------------------------------------------------------------------
    def exists(self, key: SessionKey | str) -> bool:
        return bool(self.client.exists(self.key_name(key, "meta")))

    def head(self, key: SessionKey | str) -> SessionMetadata | None:
        key = SessionKey.parse(key)
        raw = self.client.get(self.key_name(key, "meta"))
        return None if raw is None else parse_metadata(key, raw, self._source(key, "meta"))

    def list(self, user_id: str | None = None) -> list[SessionMetadata]:
        if user_id is not None:
            validate_id("user_id", user_id)
            members = self.client.zrangebylex(self.index_name, f"[{user_id}/", f"({user_id}0")  # '0' follows '/'
        else:
            members = self.client.zrange(self.index_name, 0, -1)
        keys: list[SessionKey] = []
        for member in members:
            try:
                keys.append(SessionKey.parse(member.decode()))
            except ValueError as exc:
                logger.warning("skipping %r in the session index: %s", member, exc)
        out: list[SessionMetadata] = []
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            raws = self.client.mget([self.key_name(k, "meta") for k in chunk])
            for key, raw in zip(chunk, raws, strict=True):
                if raw is None:
                    continue  # deleted between the index read and this one
                try:
                    out.append(parse_metadata(key, raw, self._source(key, "meta")))
                except SessionCorruptError as exc:
                    logger.warning("skipping session %s in the session list: %s", key, exc)
        return sorted(out, key=lambda m: (m.key.user_id, m.key.session_id))

    def load(
        self, key: SessionKey | str, *, expect: Fingerprint | None = None, device: str = "cpu"
    ) -> SessionRecord | None:
        key = SessionKey.parse(key)
        pipe = self.client.pipeline(transaction=True)  # one MULTI: a consistent snapshot
        pipe.get(self.key_name(key, "meta"))
        pipe.get(self.key_name(key, "state"))
        pipe.lrange(self.key_name(key, "log"), 0, -1)
        raw, state_bytes, lines = pipe.execute()
        if raw is None:
            return None
        meta = parse_metadata(key, raw, self._source(key, "meta"))
        check_fingerprint(meta, expect)
        state = None
        if meta.state_file is not None:
            if state_bytes is None:
                raise SessionCorruptError(
                    f"session {key}: the committed {self._source(key, 'state')} is missing; its memory cannot "
                    "be restored (delete the session)"
                )
            state = decode_state(key, meta, state_bytes, self._source(key, "state"), device)
        if meta.message_count and not lines:
            raise SessionCorruptError(
                f"session {key}: the committed {self._source(key, 'log')} is missing; the log was modified or "
                "damaged (delete the session)"
            )
        messages = decode_log(key, meta, b"".join(lines), self._source(key, "log"))
        return SessionRecord(metadata=meta, state=state, messages=messages)

    # -- writes -----------------------------------------------------------------------------
    def create(
        self, key: SessionKey | str, fingerprint: Fingerprint, *, extra: Mapping[str, Any] | None = None
    ) -> SessionRecord:
        key = SessionKey.parse(key)
        meta_name = self.key_name(key, "meta")
        now = utc_now()
        meta = SessionMetadata(key=key, fingerprint=fingerprint, created_at=now, updated_at=now, extra=dict(extra or {}))
        with self.client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(meta_name)
                if pipe.exists(meta_name):
                    raise exists_error(key)
                pipe.multi()
                pipe.delete(self.key_name(key, "log"), self.key_name(key, "state"))
                pipe.set(meta_name, meta.model_dump_json().encode("utf-8"))
                pipe.zadd(self.index_name, {str(key): 0})
                pipe.execute()
            except self._redis.WatchError:
                raise exists_error(key) from None  # another process created it in between
        return SessionRecord(metadata=meta, state=None, messages=[])

    def commit(
        self,
        record: SessionRecord,
        *,
        new_messages: Sequence[ChatMessage],
        state: DeltaMemState | None,
        tokens_written: int = 0,
        extra: Mapping[str, Any] | None = None,
    ) -> SessionRecord:
        if tokens_written < 0:
            raise ValueError(f"tokens_written must be >= 0, got {tokens_written}")
        key = record.metadata.key
        messages = as_messages(new_messages)
        state_data = state.to_bytes() if state is not None else None  # serialised before the transaction

        def write(pipe: Any, current: SessionMetadata) -> SessionMetadata:
            payload, chain = encode_log(messages, start=current.message_count, chain=current.log_chain)
            name, sha = self._state_fields(current.turn_count + 1, state_data)
            if payload:
                pipe.rpush(self.key_name(key, "log"), *payload.splitlines(keepends=True))
            meta = after_commit(
                current, added=len(messages), log_bytes_added=len(payload), chain=chain, state_file=name,
                state_sha=sha, tokens_written=tokens_written, extra=extra,
            )
            return meta

        meta = self._transact(key, record, state_data, write)
        return SessionRecord(metadata=meta, state=state, messages=[*record.messages, *messages])

    def rewrite(
        self,
        record: SessionRecord,
        *,
        messages: Sequence[ChatMessage],
        state: DeltaMemState | None,
        tokens_written: int = 0,
    ) -> SessionRecord:
        key = record.metadata.key
        kept = as_messages(messages)
        state_data = state.to_bytes() if state is not None else None

        def write(pipe: Any, current: SessionMetadata) -> SessionMetadata:
            payload, chain = encode_log(kept, start=0, chain="")
            name, sha = self._state_fields(current.turn_count + 1, state_data)
            pipe.delete(self.key_name(key, "log"))
            if payload:
                pipe.rpush(self.key_name(key, "log"), *payload.splitlines(keepends=True))
            return after_rewrite(
                current, count=len(kept), log_bytes=len(payload), chain=chain, state_file=name, state_sha=sha,
                tokens_written=tokens_written, log_file=current.log_file,
            )

        meta = self._transact(key, record, state_data, write)
        return SessionRecord(metadata=meta, state=state, messages=kept)

    @staticmethod
    def _state_fields(turn: int, data: bytes | None) -> tuple[str | None, str | None]:
        if data is None:
            return None, None
        return state_name(turn), hashlib.sha256(data).hexdigest()

    def _transact(self, key: SessionKey, record: SessionRecord, state_data: bytes | None, write: Any) -> SessionMetadata:
        """``WATCH meta``, check that ``record`` is the committed turn, then ``MULTI``: the log
        change ``write`` queues, the state and the new metadata; `SessionConflictError` if
        anything committed in between (the ``EXEC`` is refused)."""
        meta_name = self.key_name(key, "meta")
        with self.client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(meta_name)
                raw = pipe.get(meta_name)
                if raw is None:
                    raise not_found_for_commit(key)
                current = parse_metadata(key, raw, self._source(key, "meta"))
                check_current(key, record, current)
                self._check_lease(key)
                pipe.multi()
                meta = write(pipe, current)
                if state_data is None:
                    pipe.delete(self.key_name(key, "state"))
                else:
                    pipe.set(self.key_name(key, "state"), state_data)
                pipe.set(meta_name, meta.model_dump_json().encode("utf-8"))
                pipe.execute()
            except self._redis.WatchError:
                raise SessionConflictError(
                    f"cannot commit to session {key}: another writer committed while this commit was being "
                    "written; hold store.lock(key) for the whole turn (load -> compute -> commit) and load again"
                ) from None
        return meta

    def delete(self, key: SessionKey | str) -> bool:
        key = SessionKey.parse(key)
        with self.lock(key):  # waits for a turn in progress, as the directory store does
            pipe = self.client.pipeline(transaction=True)
            pipe.exists(self.key_name(key, "meta"))
            pipe.delete(self.key_name(key, "meta"), self.key_name(key, "log"), self.key_name(key, "state"))
            pipe.zrem(self.index_name, str(key))
            existed, _, _ = pipe.execute()
        # The lock key goes when this call releases it; nothing else of the session is left.
        return bool(existed)


__all__ = [
    "DEFAULT_LEASE_TTL_S",
    "DEFAULT_PREFIX",
    "INSTALL_HINT",
    "RedisNotInstalledError",
    "RedisSessionStore",
    "RedisStoreConfig",
    "SessionLeaseLost",
    "import_redis",
    "redact_url",
]
