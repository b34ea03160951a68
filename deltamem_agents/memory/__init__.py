"""Hybrid memory: δ-mem's in-model state plus an explicit, searchable text log.

Importing this package is cheap: Chroma, torch and transformers are imported only when a log
is opened or the embedding model is used.
"""

from typing import Any

# Text log (textlog.py, chunking.py, embeddings.py), the router (routing/) and HybridMemory
# (hybrid.py, loaded lazily: it needs torch and transformers).
from deltamem_agents.memory.chunking import Chunk, chunk_text, split_sentences
from deltamem_agents.memory.routing import (
    MemoryRouter,
    RouteDecision,
    RouterConfig,
    RouterError,
    RouterInput,
    calibrate,
    load_calibration_set,
    router_from_spec,
)
from deltamem_agents.memory.textlog import (
    InvalidScopeError,
    LogHit,
    TextLog,
    TextLogError,
    TextLogUnavailableError,
    content_hash,
)
from deltamem_agents.memory.textlog_config import (
    TextLogConfig,
    chroma_run_command,
    default_textlog_path,
)

_LAZY = {
    "ForgetReport": "deltamem_agents.memory.hybrid",
    "HybridChunk": "deltamem_agents.memory.hybrid",
    "HybridConfig": "deltamem_agents.memory.hybrid",
    "HybridMemory": "deltamem_agents.memory.hybrid",
    "HybridReply": "deltamem_agents.memory.hybrid",
    "MemoryEvent": "deltamem_agents.memory.audit",
    "MemoryItem": "deltamem_agents.memory.verbs",
    "MemoryNotFoundError": "deltamem_agents.memory.verbs",
    "MemoryConflictError": "deltamem_agents.memory.verbs",
    "ResetReport": "deltamem_agents.memory.verbs",
    "PruneReport": "deltamem_agents.memory.retention",
    "RetentionPolicy": "deltamem_agents.memory.retention",
    "MiniLMEmbeddingFunction": "deltamem_agents.memory.embeddings",
    "EmbeddingModelError": "deltamem_agents.memory.embeddings",
    "default_model_dir": "deltamem_agents.memory.embeddings",
    "shared_memory": "deltamem_agents.memory.shared",
    "shared_runtime": "deltamem_agents.memory.shared",
    "shared_textlog": "deltamem_agents.memory.shared",
}


def __getattr__(name: str) -> Any:
    # embeddings.py, hybrid.py, verbs.py and shared.py import torch: load them on first use only.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Chunk",
    "EmbeddingModelError",
    "ForgetReport",
    "HybridChunk",
    "HybridConfig",
    "HybridMemory",
    "HybridReply",
    "InvalidScopeError",
    "LogHit",
    "MemoryConflictError",
    "MemoryEvent",
    "MemoryItem",
    "PruneReport",
    "RetentionPolicy",
    "MemoryNotFoundError",
    "MemoryRouter",
    "MiniLMEmbeddingFunction",
    "ResetReport",
    "RouteDecision",
    "RouterConfig",
    "RouterError",
    "RouterInput",
    "TextLog",
    "TextLogConfig",
    "TextLogError",
    "TextLogUnavailableError",
    "calibrate",
    "chroma_run_command",
    "chunk_text",
    "content_hash",
    "default_model_dir",
    "default_textlog_path",
    "load_calibration_set",
    "router_from_spec",
    "shared_memory",
    "shared_runtime",
    "shared_textlog",
    "split_sentences",
]
