"""δ-mem for LlamaIndex: `DeltaMemMemory`, a δ-mem session as agent and chat-engine memory."""

from llama_index.memory.deltamem.base import DeltaMemMemory

__all__ = ["DeltaMemMemory"]
