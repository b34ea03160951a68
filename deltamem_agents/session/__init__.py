"""Sessions: chats over a δ-mem model whose memory persists across turns and restarts."""

# Persistence lives in deltamem_agents.store; its names are re-exported here, where users have
# always imported them.
# Batched turns (batch.py).
from deltamem_agents.session.batch import (
    BatchPiece,
    BatchRequest,
    BatchStats,
    SessionBatch,
    reply_batch,
    stream_batch,
)

# Conversations (chat.py, session.py).
from deltamem_agents.session.chat import ChatEncoder, ChatTemplateError
from deltamem_agents.session.continuous import (
    BatchEvent,
    ContinuousBatch,
    ContinuousStats,
)
from deltamem_agents.session.session import (
    ConversationForkError,
    GenerationOptions,
    MemorySession,
    Reply,
    SessionConfig,
    SessionError,
    Turn,
    TurnStats,
)
from deltamem_agents.session.tools import (
    ToolCall,
    ToolSpec,
    ToolSpecError,
    parse_tool_calls,
    render_tools_prompt,
)
from deltamem_agents.store import (
    SESSION_SCHEMA_VERSION,
    STORE_ENV,
    ChatMessage,
    DirectorySessionStore,
    Fingerprint,
    InvalidSessionIdError,
    SessionConflictError,
    SessionCorruptError,
    SessionExistsError,
    SessionKey,
    SessionLockTimeout,
    SessionMetadata,
    SessionMismatchError,
    SessionNotFoundError,
    SessionRecord,
    SessionStore,
    SessionStoreError,
    default_store_root,
    is_store_url,
    open_session_store,
    validate_id,
)

__all__ = [
    # batched turns (batch.py)
    "BatchPiece",
    "BatchRequest",
    "BatchStats",
    "SessionBatch",
    "reply_batch",
    "stream_batch",
    # continuous batching (continuous.py)
    "BatchEvent",
    "ContinuousBatch",
    "ContinuousStats",
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
    "Turn",
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


# Names that live above this layer (the composition root, deltamem_agents.runtime) or in an
# optional extra (the Redis store), re-exported lazily so that importing the session layer
# never imports what sits on top of it.
_LAZY = {
    "DeltaMemRuntime": "deltamem_agents.runtime",
    "UntrainedMemoryWarning": "deltamem_agents.runtime",
    "find_shipped_adapter": "deltamem_agents.runtime",
    "RedisSessionStore": "deltamem_agents.store",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
