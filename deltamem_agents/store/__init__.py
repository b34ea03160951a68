"""Persistence of sessions: the records a session is saved as, and the stores that keep them.

A store keeps messages, metadata and the δ-state of each session and commits a turn atomically.
`DirectorySessionStore` keeps them in a folder; `RedisSessionStore` (the ``redis`` extra) shares
them between machines; `open_session_store` picks one from a path or a ``redis://`` URL.
Nothing here loads a model: conversations (``deltamem_agents.session``) sit on top of this.
"""

from typing import Any

from deltamem_agents.store.base import (
    SessionConflictError,
    SessionCorruptError,
    SessionExistsError,
    SessionLockTimeout,
    SessionMismatchError,
    SessionNotFoundError,
    SessionStore,
    SessionStoreError,
    default_store_root,
)
from deltamem_agents.store.directory import DirectorySessionStore
from deltamem_agents.store.records import (
    SESSION_SCHEMA_VERSION,
    ChatMessage,
    Fingerprint,
    InvalidSessionIdError,
    SessionKey,
    SessionMetadata,
    SessionRecord,
    validate_id,
)
from deltamem_agents.store.url import STORE_ENV, is_store_url, open_session_store

__all__ = [
    "SESSION_SCHEMA_VERSION",
    "STORE_ENV",
    "ChatMessage",
    "DirectorySessionStore",
    "Fingerprint",
    "InvalidSessionIdError",
    "RedisSessionStore",
    "SessionConflictError",
    "SessionCorruptError",
    "SessionExistsError",
    "SessionKey",
    "SessionLockTimeout",
    "SessionMetadata",
    "SessionMismatchError",
    "SessionNotFoundError",
    "SessionRecord",
    "SessionStore",
    "SessionStoreError",
    "default_store_root",
    "is_store_url",
    "open_session_store",
    "validate_id",
]


def __getattr__(name: str) -> Any:
    # The Redis store imports `redis` (an optional extra) only when it is first asked for.
    if name == "RedisSessionStore":
        from deltamem_agents.store.redis_store import RedisSessionStore

        return RedisSessionStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
