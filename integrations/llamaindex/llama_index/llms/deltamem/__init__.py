"""δ-mem for LlamaIndex: `DeltaMemLLM`, a frozen LLM whose memory persists between runs."""

from llama_index.llms.deltamem.base import DeltaMemLLM

from deltamem_agents.session import (
    ConversationForkError,  # a rewound conversation; re-exported here
)

__all__ = ["ConversationForkError", "DeltaMemLLM"]
