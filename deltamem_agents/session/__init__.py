"""Sessions: chats over a δ-mem model whose memory persists across turns and restarts."""

# Persistence (records.py, store.py). Other session modules (chat, session, ...) add their
# own exports below; keep this list limited to what each module owns.
from deltamem_agents.session.records import (
    SESSION_SCHEMA_VERSION,
    ChatMessage,
    Fingerprint,
    InvalidSessionIdError,
    SessionKey,
    SessionMetadata,
    SessionRecord,
    validate_id,
)
from deltamem_agents.session.store import (
    DirectorySessionStore,
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
from deltamem_agents.session.store_url import STORE_ENV, is_store_url, open_session_store

# The Redis store imports `redis` only when one is made: `RedisSessionStore` is loaded on first use.

# Conversations (chat.py, session.py, runtime.py).
from deltamem_agents.session.chat import ChatEncoder, ChatTemplateError
from deltamem_agents.session.runtime import DeltaMemRuntime, UntrainedMemoryWarning, find_shipped_adapter
from deltamem_agents.session.session import (
    ConversationForkError,
    GenerationOptions,
    MemorySession,
    Reply,
    SessionConfig,
    SessionError,
    TurnStats,
)
from deltamem_agents.session.tools import ToolCall, ToolSpec, ToolSpecError, parse_tool_calls, render_tools_prompt

# Batched turns (batch.py).
from deltamem_agents.session.batch import BatchPiece, BatchRequest, BatchStats, SessionBatch, reply_batch, stream_batch

__all__ = [
    # batched turns (batch.py)
    "BatchPiece",
    "BatchRequest",
    "BatchStats",
    "SessionBatch",
    "reply_batch",
    "stream_batch",
    # conversations (chat.py, session.py, runtime.py)
    "ChatEncoder",
    "ChatTemplateError",
    "ConversationForkError",
    "DeltaMemRuntime",
    "GenerationOptions",
    "MemorySession",
    "Reply",
    "SessionConfig",
    "SessionError",
    "ToolCall",
    "ToolSpec",
    "ToolSpecError",
    "TurnStats",
    "UntrainedMemoryWarning",
    "find_shipped_adapter",
    "parse_tool_calls",
    "render_tools_prompt",
    # persistence (records.py, store.py)
    "SESSION_SCHEMA_VERSION",
    "ChatMessage",
    "DirectorySessionStore",
    "Fingerprint",
    "InvalidSessionIdError",
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
    "validate_id",
    # store selection (store_url.py, redis_store.py)
    "STORE_ENV",
    "RedisSessionStore",
    "is_store_url",
    "open_session_store",
]


def __getattr__(name: str) -> object:
    if name == "RedisSessionStore":
        from deltamem_agents.session.redis_store import RedisSessionStore

        return RedisSessionStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
