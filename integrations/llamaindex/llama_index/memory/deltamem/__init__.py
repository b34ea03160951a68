"""δ-mem for LlamaIndex: `DeltaMemMemory` (a δ-mem session as agent and chat-engine memory),
`DeltaMemMemoryBlock` (a δ-mem session as a block of LlamaIndex's `Memory`), and `memory_tools`
(tools with which an agent reads and corrects that memory)."""

from llama_index.memory.deltamem.base import DeltaMemMemory
from llama_index.memory.deltamem.block import DeltaMemMemoryBlock
from llama_index.memory.deltamem.tools import MemoryTool, memory_tools
from llama_index.memory.deltamem.verbs import ScopedMemoryVerbs

__all__ = ["DeltaMemMemory", "DeltaMemMemoryBlock", "MemoryTool", "ScopedMemoryVerbs", "memory_tools"]
