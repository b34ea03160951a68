"""`DirectorySessionStore`: sessions as folders on a local or shared file system.

Each session is ``<root>/<user_id>/<session_id>/`` with a hash-chained message log, one state
file per committed turn and a metadata file replaced atomically last (docs/persistence.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from deltamem_agents.core.state import DeltaMemState
from deltamem_agents.fileio import atomic_write_bytes, fsync_dir
from deltamem_agents.store.base import (
    SessionCorruptError,
    SessionLockTimeout,
    SessionStore,
    as_key,
    default_store_root,
)
from deltamem_agents.store.codec import (
    LOCK_FILE,
    LOG_FILE,
    META_FILE,
    STATE_PREFIX,
    STATE_SUFFIX,
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
    InvalidSessionIdError,
    SessionKey,
    SessionMetadata,
    SessionRecord,
    utc_now,
    validate_id,
)

logger = logging.getLogger(__name__)


def _write_state(directory: Path, turn: int, state: DeltaMemState | None) -> tuple[str | None, str | None]:
    """Write the state of ``turn`` atomically; returns (file name, sha256) or (None, None)."""
    if state is None:
        return None, None
    data = state.to_bytes()
    name = state_name(turn)
    atomic_write_bytes(directory / name, data)
    return name, hashlib.sha256(data).hexdigest()


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
        key = as_key(key)
        return self.root / key.user_id / key.session_id

    # -- locking -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, key: SessionKey | str, timeout: float | None = None) -> Iterator[SessionKey]:
        key = as_key(key)
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
        key = as_key(key)
        meta_path = self.session_dir(key) / META_FILE
        raw = self._read_meta_bytes(meta_path)
        return None if raw is None else self._parse_meta(key, raw, meta_path)

    # -- load --------------------------------------------------------------------------------
    def load(
        self, key: SessionKey | str, *, expect: Fingerprint | None = None, device: str = "cpu"
    ) -> SessionRecord | None:
        key = as_key(key)
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
        key = as_key(key)
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
            payload, chain = encode_log(messages, start=current.message_count, chain=current.log_chain)
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
            payload, chain = encode_log(messages, start=0, chain="")
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
        key = as_key(key)
        directory = self.session_dir(key)
        if not directory.is_dir():
            return False
        with self.lock(key):
            meta_path = directory / META_FILE
            existed = meta_path.exists()
            if existed:
                meta_path.unlink()  # the deletion's commit point
                fsync_dir(directory)
            self._remove_contents(directory)
        # The directory and its .lock stay: removing a lock file another process may be waiting
        # on would let two processes hold "the" lock at once.
        return existed

    # -- helpers -----------------------------------------------------------------------------
    @staticmethod
    def _write_meta(directory: Path, meta: SessionMetadata) -> None:
        atomic_write_bytes(directory / META_FILE, meta.model_dump_json(indent=2).encode("utf-8"))
        fsync_dir(directory)

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
