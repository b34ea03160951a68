"""Hybrid memory: δ-mem's in-model state plus an explicit, searchable text log.

Importing this package is cheap: Chroma, torch and transformers are imported only when a log
is opened or the embedding model is used.
"""

from typing import Any

# Text log (textlog.py, chunking.py, embeddings.py). The router and HybridMemory add their own
# exports below; keep this list limited to what each module owns.
from deltamem_agents.memory.chunking import Chunk, chunk_text, split_sentences
from deltamem_agents.memory.textlog import (
    InvalidScopeError,
    LogHit,
    TextLog,
    TextLogConfig,
    TextLogError,
    TextLogUnavailableError,
    chroma_run_command,
    content_hash,
    default_textlog_path,
)

_LAZY = {
    "MiniLMEmbeddingFunction": "deltamem_agents.memory.embeddings",
    "EmbeddingModelError": "deltamem_agents.memory.embeddings",
    "default_model_dir": "deltamem_agents.memory.embeddings",
}


def __getattr__(name: str) -> Any:
    # embeddings.py imports chromadb and torch: load it on first use only.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Chunk",
    "EmbeddingModelError",
    "InvalidScopeError",
    "LogHit",
    "MiniLMEmbeddingFunction",
    "TextLog",
    "TextLogConfig",
    "TextLogError",
    "TextLogUnavailableError",
    "chroma_run_command",
    "chunk_text",
    "content_hash",
    "default_model_dir",
    "default_textlog_path",
    "split_sentences",
]
