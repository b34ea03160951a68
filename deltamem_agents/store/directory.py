"""Persistence of sessions: the `SessionStore` interface and its directory implementation.

One entry per (user_id, session_id) holds the session's OSAM state, its message log and its
metadata. A turn is committed atomically with :meth:`SessionStore.commit`; a caller that
serves a session from several threads or processes holds :meth:`SessionStore.lock` for the
whole turn (load -> compute -> commit). See ``docs/persistence.md`` for the on-disk layout,
the commit protocol and how to write another backend.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from pydantic import ValidationError

from deltamem_agents.core.state import DeltaMemState, StateFileError, atomic_write_bytes
from deltamem_agents.store.records import (
    SESSION_SCHEMA_VERSION,
    ChatMessage,
    Fingerprint,
    InvalidSessionIdError,
    SessionKey,
    SessionMetadata,
    SessionRecord,
    chain_next,
    utc_now,
    validate_id,
)

logger = logging.getLogger(__name__)

META_FILE = "meta.json"
LOG_FILE = "messages.jsonl"
LOCK_FILE = ".lock"
STATE_PREFIX = "state-"
STATE_SUFFIX = ".safetensors"


# -- errors -----------------------------------------------------------------------------------
class SessionStoreError(Exception):
    """Base class of every session-store error."""


class SessionNotFoundError(SessionStoreError):
    """The session does not exist (never created, or deleted)."""


class SessionExistsError(SessionStoreError):
    """``create`` was asked for a session that already exists."""


class SessionCorruptError(SessionStoreError):
    """A stored session failed verification; nothing was dropped or repaired silently."""


class SessionMismatchError(SessionStoreError):
    """The session's state was saved for another backbone, adapter or δ-mem config."""

    def __init__(self, key: SessionKey, saved: Fingerprint, expected: Fingerprint) -> None:
        self.key, self.saved, self.expected = key, saved, expected
        self.differences = saved.mismatch(expected)
        super().__init__(
            f"session {key} was saved for another model and its memory cannot be used with this one: "
            f"{'; '.join(self.differences)}.\n"
            f"  saved:    {saved.describe()}\n"
            f"  expected: {expected.describe()}\n"
            "To proceed, load it with the backbone, adapter and config it was saved with, or start a "
            f"new session (another session_id), or delete this one with `deltamem sessions delete {key}`."
        )


class SessionLockTimeout(SessionStoreError, TimeoutError):
    """Another process or thread held the session's lock for longer than the timeout."""


class SessionConflictError(SessionStoreError):
    """``commit`` got a record older than the stored session (a concurrent writer committed first)."""


def default_store_root() -> Path:
    """Where sessions live by default.

    ``$DELTAMEM_HOME/sessions``, else ``$XDG_DATA_HOME/deltamem/sessions``, else
    ``~/.local/share/deltamem/sessions``.
    """
    home = os.environ.get("DELTAMEM_HOME")
    if home:
        return Path(home).expanduser() / "sessions"
    data = os.environ.get("XDG_DATA_HOME")
    base = Path(data).expanduser() if data else Path.home() / ".local" / "share"
    return base / "deltamem" / "sessions"


def _key(key: SessionKey | str) -> SessionKey:
    return SessionKey.parse(key)


# -- interface --------------------------------------------------------------------------------
class SessionStore(ABC):
    """Where sessions live. Implementations must make ``commit`` atomic and ``lock`` exclusive
    across every process and thread that uses the same storage."""

    @abstractmethod
    def load(self, key: SessionKey, *, expect: Fingerprint | None = None) -> SessionRecord | None:
        """The last committed turn of ``key``, verified; ``None`` if the session does not exist.

        Raises `SessionCorruptError` if verification fails and `SessionMismatchError` if
        ``expect`` is given and differs from the stored fingerprint.
        """

    @abstractmethod
    def create(
        self, key: SessionKey, fingerprint: Fingerprint, *, extra: Mapping[str, Any] | None = None
    ) -> SessionRecord:
        """A new empty session (no state, no messages); `SessionExistsError` if it exists."""

    @abstractmethod
    def commit(
        self,
        record: SessionRecord,
        *,
        new_messages: Sequence[ChatMessage],
        state: DeltaMemState | None,
        tokens_written: int = 0,
        extra: Mapping[str, Any] | None = None,
    ) -> SessionRecord:
        """Commit one turn atomically: append ``new_messages``, replace the state with ``state``
        (``None`` stores no state), add ``tokens_written``, bump ``turn_count``/``updated_at``, and
        replace ``extra`` if given. ``record`` must be the latest committed turn (else
        `SessionConflictError`). Returns the new record; ``record`` is left untouched."""

    @abstractmethod
    def rewrite(
        self,
        record: SessionRecord,
        *,
        messages: Sequence[ChatMessage],
        state: DeltaMemState | None,
        tokens_written: int = 0,
    ) -> SessionRecord:
        """Replace the whole log and the state in one atomic commit (forgetting: the state is
        rebuilt from the remaining messages). Counts as a turn; ``record`` must be the latest
        committed turn (else `SessionConflictError`)."""

    @abstractmethod
    def list(self, user_id: str | None = None) -> list[SessionMetadata]:
        """Metadata of the sessions of ``user_id`` (all users if ``None``), sorted by key."""

    @abstractmethod
    def delete(self, key: SessionKey) -> bool:
        """Delete a session; ``False`` if it did not exist."""

    @abstractmethod
    def exists(self, key: SessionKey) -> bool:
        """Whether ``key`` has a committed session."""

    @abstractmethod
    def lock(self, key: SessionKey, timeout: float | None = None) -> contextlib.AbstractContextManager[SessionKey]:
        """Exclusive access to one session across processes and threads, reentrant in the
        holding thread. ``timeout=None`` uses the store's default; on expiry `SessionLockTimeout`."""

    @property
    def location(self) -> str:
        """Where the sessions live, for messages to people (a folder, a Redis URL)."""
        return repr(self)

    def where(self, key: SessionKey) -> str:
        """Where one session lives, for messages to people."""
        return f"{self.location} ({key})"

    def head(self, key: SessionKey) -> SessionMetadata | None:
        """The committed metadata alone (no state, no log): a cheap "did anyone commit?".

        Backends should override this default, which loads everything."""
        record = self.load(key)
        return None if record is None else record.metadata

    # -- conveniences built on the interface -----------------------------------------------------
    def load_or_create(self, key: SessionKey, fingerprint: Fingerprint) -> SessionRecord:
        """Resume ``key`` if it exists (checking ``fingerprint``), else create it."""
        with self.lock(key):
            record = self.load(key, expect=fingerprint)
            return record if record is not None else self.create(key, fingerprint)

    def require(self, key: SessionKey, *, expect: Fingerprint | None = None) -> SessionRecord:
        """Like `load`, but a missing session raises `SessionNotFoundError`."""
        record = self.load(key, expect=expect)
        if record is None:
            raise SessionNotFoundError(f"no session {key}: create it first (store.create or load_or_create)")
        return record


def _log_lines(messages: Sequence[ChatMessage], *, start: int, chain: str) -> tuple[bytes, str]:
    """JSONL lines for ``messages`` numbered from ``start``, continuing the hash ``chain``."""
    lines = []
    for offset, message in enumerate(messages):
        body = message.model_dump(mode="json")
        chain = chain_next(chain, body)
        entry = {"i": start + offset, "chain": chain, "message": body}
        lines.append(json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n")
    return "".join(lines).encode("utf-8"), chain


def _write_state(directory: Path, turn: int, state: DeltaMemState | None) -> tuple[str | None, str | None]:
    """Write the state of ``turn`` atomically; returns (file name, sha256) or (None, None)."""
    if state is None:
        return None, None
    data = state.to_bytes()
    name = state_name(turn)
    atomic_write_bytes(directory / name, data)
    return name, hashlib.sha256(data).hexdigest()


# -- verification shared by every backend -----------------------------------------------------
# A backend reads bytes its own way; what the bytes must be (schema, key, fingerprint, checksum,
# hash chain) is decided here, once, so every store refuses the same damage with the same words.
encode_log = _log_lines


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



# -- directory implementation -----------------------------------------------------------------
# One FileLock object per lock path for the whole process: filelock is reentrant per object
# (and per thread), while two objects on one path would block each other in the same thread.
_LOCKS: weakref.WeakValueDictionary[str, FileLock] = weakref.WeakValueDictionary()
_LOCKS_GUARD = threading.Lock()


def _file_lock(path: Path) -> FileLock:
    name = os.path.abspath(path)
    with _LOCKS_GUARD:
        lock = _LOCKS.get(name)
        if lock is None:
            lock = FileLock(name)
            _LOCKS[name] = lock
        return lock


def _fsync_dir(path: Path) -> None:
    """Make renames and unlinks in ``path`` durable (best effort: not every OS allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class DirectorySessionStore(SessionStore):
    """Sessions as directories ``<root>/<user_id>/<session_id>/``.

    Each holds ``messages.jsonl`` (append-only, hash-chained), ``state-<turn>.safetensors`` (the
    committed state) and ``meta.json`` (the commit record, replaced atomically last), plus
    ``.lock``. See ``docs/persistence.md``.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, *, lock_timeout: float | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_store_root()
        self.lock_timeout = lock_timeout  # None: wait forever

    def __repr__(self) -> str:
        return f"DirectorySessionStore({str(self.root)!r})"

    @property
    def location(self) -> str:
        return str(self.root)

    def where(self, key: SessionKey | str) -> str:
        return str(self.session_dir(key))

    # -- paths -------------------------------------------------------------------------------
    def session_dir(self, key: SessionKey | str) -> Path:
        key = _key(key)
        return self.root / key.user_id / key.session_id

    # -- locking -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, key: SessionKey | str, timeout: float | None = None) -> Iterator[SessionKey]:
        key = _key(key)
        directory = self.session_dir(key)
        directory.mkdir(parents=True, exist_ok=True)
        lock = _file_lock(directory / LOCK_FILE)
        wait = timeout if timeout is not None else self.lock_timeout
        try:
            lock.acquire(timeout=-1 if wait is None else wait)
        except Timeout as exc:
            raise SessionLockTimeout(
                f"session {key} is locked by another process or thread (waited {wait}s for {lock.lock_file}); "
                "retry later, or pass a longer timeout to lock()"
            ) from exc
        try:
            yield key
        finally:
            lock.release()

    # -- queries -----------------------------------------------------------------------------
    def exists(self, key: SessionKey | str) -> bool:
        return (self.session_dir(key) / META_FILE).is_file()

    def list(self, user_id: str | None = None) -> list[SessionMetadata]:
        if user_id is not None:
            validate_id("user_id", user_id)
            users = [self.root / user_id]
        else:
            users = sorted(p for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []
        out: list[SessionMetadata] = []
        for user in users:
            if not user.is_dir():
                continue
            for directory in sorted(user.iterdir()):
                meta_path = directory / META_FILE
                if not meta_path.is_file():
                    continue
                try:
                    key = SessionKey(user_id=user.name, session_id=directory.name)
                    out.append(self._parse_meta(key, meta_path.read_bytes(), meta_path))
                except (InvalidSessionIdError, SessionCorruptError, OSError) as exc:
                    logger.warning("skipping %s in the session list: %s", directory, exc)
        return out

    def head(self, key: SessionKey | str) -> SessionMetadata | None:
        key = _key(key)
        meta_path = self.session_dir(key) / META_FILE
        raw = self._read_meta_bytes(meta_path)
        return None if raw is None else self._parse_meta(key, raw, meta_path)

    # -- load --------------------------------------------------------------------------------
    def load(
        self, key: SessionKey | str, *, expect: Fingerprint | None = None, device: str = "cpu"
    ) -> SessionRecord | None:
        key = _key(key)
        meta_path = self.session_dir(key) / META_FILE
        # Lock-free read: a commit running concurrently can replace meta.json and delete the state
        # file we are about to read. If verification fails and meta.json changed meanwhile, retry;
        # after a few tries, read under the lock. A failure with meta.json unchanged is real.
        for _ in range(3):
            raw = self._read_meta_bytes(meta_path)
            if raw is None:
                return None
            try:
                return self._load(key, raw, expect, device)
            except SessionCorruptError:
                if self._read_meta_bytes(meta_path) == raw:
                    raise
        with self.lock(key):
            raw = self._read_meta_bytes(meta_path)
            return None if raw is None else self._load(key, raw, expect, device)

    @staticmethod
    def _read_meta_bytes(path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def _parse_meta(self, key: SessionKey, raw: bytes, path: Path) -> SessionMetadata:
        return parse_metadata(key, raw, str(path))

    def _load(self, key: SessionKey, raw: bytes, expect: Fingerprint | None, device: str) -> SessionRecord:
        directory = self.session_dir(key)
        meta = self._parse_meta(key, raw, directory / META_FILE)
        check_fingerprint(meta, expect)
        state = self._read_state(key, meta, device)
        messages = self._read_log(key, meta)
        return SessionRecord(metadata=meta, state=state, messages=messages)

    def _read_state(self, key: SessionKey, meta: SessionMetadata, device: str) -> DeltaMemState | None:
        if meta.state_file is None:
            return None
        name = meta.state_file
        if Path(name).name != name or not (name.startswith(STATE_PREFIX) and name.endswith(STATE_SUFFIX)):
            raise SessionCorruptError(f"session {key}: meta.json names an invalid state file {name!r}")
        path = self.session_dir(key) / name
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise SessionCorruptError(
                f"session {key}: the committed state file {path} is missing; its memory cannot be restored "
                "(restore the file from a backup, or delete the session)"
            ) from exc
        return decode_state(key, meta, data, f"state file {path}", device)

    def _read_log(self, key: SessionKey, meta: SessionMetadata) -> list[ChatMessage]:
        path = self.session_dir(key) / meta.log_file
        if meta.message_count == 0:
            return []
        try:
            with open(path, "rb") as handle:
                data = handle.read(meta.log_bytes)
        except FileNotFoundError as exc:
            raise SessionCorruptError(
                f"session {key}: message log {path} is missing; the log was modified or damaged "
                "(restore it from a backup, or delete the session)"
            ) from exc
        return decode_log(key, meta, data, f"message log {path}")

    # -- writes ------------------------------------------------------------------------------
    def create(
        self, key: SessionKey | str, fingerprint: Fingerprint, *, extra: Mapping[str, Any] | None = None
    ) -> SessionRecord:
        key = _key(key)
        with self.lock(key):
            directory = self.session_dir(key)
            if (directory / META_FILE).exists():
                raise exists_error(key)
            self._remove_contents(directory)  # leftovers of an interrupted create or delete
            now = utc_now()
            meta = SessionMetadata(
                key=key, fingerprint=fingerprint, created_at=now, updated_at=now, extra=dict(extra or {})
            )
            (directory / LOG_FILE).touch()
            self._write_meta(directory, meta)
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
        key = record.metadata.key
        if tokens_written < 0:
            raise ValueError(f"tokens_written must be >= 0, got {tokens_written}")
        messages = as_messages(new_messages)
        with self.lock(key):
            directory = self.session_dir(key)
            meta_path = directory / META_FILE
            current = self._current(key, record, meta_path)

            # 1. append the new log lines after the committed part, dropping an uncommitted tail.
            payload, chain = _log_lines(messages, start=current.message_count, chain=current.log_chain)
            log_path = directory / current.log_file
            with open(log_path, "a+b") as handle:
                size = handle.seek(0, os.SEEK_END)
                if size < current.log_bytes:
                    raise SessionCorruptError(
                        f"session {key}: message log {log_path} is shorter ({size} bytes) than its committed "
                        f"length ({current.log_bytes}); restore it from a backup, or delete the session"
                    )
                if size > current.log_bytes:
                    handle.truncate(current.log_bytes)  # the tail of an interrupted commit
                if payload:
                    handle.write(payload)  # "a" mode: lands at the (new) end of file
                handle.flush()
                os.fsync(handle.fileno())

            # 2. the new state file.
            turn = current.turn_count + 1
            state_file, state_sha = _write_state(directory, turn, state)

            # 3. the commit point: meta.json, replaced atomically.
            meta = after_commit(
                current, added=len(messages), log_bytes_added=len(payload), chain=chain, state_file=state_file,
                state_sha=state_sha, tokens_written=tokens_written, extra=extra,
            )
            self._write_meta(directory, meta)

            # 4. drop the previous state file and any orphan of an interrupted commit.
            self._clean_orphans(directory, keep=state_file, log_file=meta.log_file)
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
        messages = as_messages(messages)
        with self.lock(key):
            directory = self.session_dir(key)
            current = self._current(key, record, directory / META_FILE)
            turn = current.turn_count + 1
            # A new log file beside the committed one: until meta.json names it, the old turn stands.
            payload, chain = _log_lines(messages, start=0, chain="")
            log_file = f"messages-{turn:06d}.jsonl"
            atomic_write_bytes(directory / log_file, payload)
            state_file, state_sha = _write_state(directory, turn, state)
            meta = after_rewrite(
                current, count=len(messages), log_bytes=len(payload), chain=chain, state_file=state_file,
                state_sha=state_sha, tokens_written=tokens_written, log_file=log_file,
            )
            self._write_meta(directory, meta)
            self._clean_orphans(directory, keep=state_file, log_file=log_file)
        return SessionRecord(metadata=meta, state=state, messages=messages)

    def _current(self, key: SessionKey, record: SessionRecord, meta_path: Path) -> SessionMetadata:
        """The committed metadata, which ``record`` must still be (optimistic concurrency)."""
        raw = self._read_meta_bytes(meta_path)
        if raw is None:
            raise not_found_for_commit(key)
        current = self._parse_meta(key, raw, meta_path)
        check_current(key, record, current)
        return current

    def delete(self, key: SessionKey | str) -> bool:
        key = _key(key)
        directory = self.session_dir(key)
        if not directory.is_dir():
            return False
        with self.lock(key):
            meta_path = directory / META_FILE
            existed = meta_path.exists()
            if existed:
                meta_path.unlink()  # the deletion's commit point
                _fsync_dir(directory)
            self._remove_contents(directory)
        # The directory and its .lock stay: removing a lock file another process may be waiting
        # on would let two processes hold "the" lock at once.
        return existed

    # -- helpers -----------------------------------------------------------------------------
    @staticmethod
    def _write_meta(directory: Path, meta: SessionMetadata) -> None:
        atomic_write_bytes(directory / META_FILE, meta.model_dump_json(indent=2).encode("utf-8"))
        _fsync_dir(directory)

    @staticmethod
    def _clean_orphans(directory: Path, keep: str | None, log_file: str = LOG_FILE) -> None:
        for path in directory.iterdir():
            name = path.name
            stale_state = name.startswith(STATE_PREFIX) and name.endswith(STATE_SUFFIX) and name != keep
            stale_log = name.startswith("messages") and name.endswith(".jsonl") and name != log_file
            stale_tmp = name.startswith(".") and name.endswith(".tmp")  # atomic_write_bytes leftovers
            if stale_state or stale_log or stale_tmp:
                path.unlink(missing_ok=True)

    @staticmethod
    def _remove_contents(directory: Path) -> None:
        """Remove every file of a session directory except its lock file."""
        for path in directory.iterdir():
            if path.name == LOCK_FILE:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
