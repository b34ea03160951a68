"""The `SessionStore` contract every backend keeps, and the errors a store raises.

One entry per (user_id, session_id) holds the session's OSAM state, its message log and its
metadata. A turn is committed atomically with :meth:`SessionStore.commit`; a caller that
serves a session from several threads or processes holds :meth:`SessionStore.lock` for the
whole turn (load -> compute -> commit). See ``docs/persistence.md`` for the layout, the commit
protocol and how to write another backend (docs/architecture.md: where a new store goes).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from deltamem_agents.core.state import DeltaMemState
from deltamem_agents.errors import ConflictError, DeltaMemError, NotFoundError
from deltamem_agents.paths import store_root
from deltamem_agents.store.records import (
    ChatMessage,
    Fingerprint,
    SessionKey,
    SessionMetadata,
    SessionRecord,
)


# -- errors -----------------------------------------------------------------------------------
class SessionStoreError(DeltaMemError):
    """Base class of every session-store error (the CLI prints each as one line, exit 2)."""

    exit_code: ClassVar[int] = 2


class SessionNotFoundError(SessionStoreError, NotFoundError):
    """The session does not exist (never created, or deleted)."""


class SessionExistsError(SessionStoreError, ConflictError):
    """``create`` was asked for a session that already exists."""


class SessionCorruptError(SessionStoreError):
    """A stored session failed verification; nothing was dropped or repaired silently."""


class SessionMismatchError(SessionStoreError, ConflictError):
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


class SessionLockTimeout(SessionStoreError, ConflictError, TimeoutError):
    """Another process or thread held the session's lock for longer than the timeout."""

    #: busy, not refused: the server answers 503 with Retry-After
    http_status: ClassVar[int] = 503


class SessionConflictError(SessionStoreError, ConflictError):
    """``commit`` got a record older than the stored session (a concurrent writer committed first)."""


def default_store_root() -> Path:
    """Where sessions live by default (`deltamem_agents.paths.store_root`): ``$DELTAMEM_HOME/sessions``,
    else ``$XDG_DATA_HOME/deltamem/sessions``, else ``~/.local/share/deltamem/sessions``."""
    return store_root()


def as_key(key: SessionKey | str) -> SessionKey:
    """A key from a key or its ``"user/session"`` string."""
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
