"""δ-mem for LlamaIndex: `DeltaMemLLM`, a frozen LLM whose memory persists between runs."""

from llama_index.llms.deltamem.base import DeltaMemLLM
from llama_index.llms.deltamem.utils import ConversationForkError

__all__ = ["ConversationForkError", "DeltaMemLLM"]
