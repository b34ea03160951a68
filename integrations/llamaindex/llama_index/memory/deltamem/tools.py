"""`memory_tools`: LlamaIndex tools with which an agent reads and corrects its own δ-mem memory.

Each tool is bound to one `DeltaMemMemory` or `DeltaMemMemoryBlock`, so its scope (user and
session) is fixed by the caller, never chosen by the model. A wrong input (an unknown or foreign
memory id, empty text, a correction that collides with another entry) comes back to the model as
an error tool message (``is_error=True``) that says what to do, instead of ending the run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from llama_index.core.bridge.pydantic import BaseModel, Field
from llama_index.core.tools import FunctionTool, ToolOutput

from deltamem_agents.errors import UserError
from deltamem_agents.memory.audit import MemoryEvent
from deltamem_agents.memory.textlog import LogHit
from deltamem_agents.memory.verbs import MemoryItem
from llama_index.memory.deltamem.verbs import ScopedMemoryVerbs

TOOL_NAMES = ("search_memory", "list_memories", "update_memory", "delete_memory", "memory_history")


class SearchMemoryArgs(BaseModel):
    query: str = Field(description="what to look for, in plain words (e.g. 'where does the user live')")
    k: int = Field(default=4, ge=1, le=20, description="how many entries to return")


class ListMemoriesArgs(BaseModel):
    limit: int | None = Field(default=20, ge=1, le=200, description="most entries to return, oldest first")


class UpdateMemoryArgs(BaseModel):
    memory_id: str = Field(description="the id of the entry to correct, as search_memory or list_memories show it")
    text: str = Field(min_length=1, description="the entry's whole corrected text, replacing the old one")


class MemoryIdArgs(BaseModel):
    memory_id: str = Field(description="the id of the entry, as search_memory or list_memories show it")


class MemoryTool(FunctionTool):
    """A `FunctionTool` whose caller errors (`UserError`: unknown id, bad text, conflict) become an
    error tool message, so the model can try again; other exceptions still propagate."""

    def call(self, *args: Any, **kwargs: Any) -> ToolOutput:
        try:
            return super().call(*args, **kwargs)
        except UserError as error:
            return self._error(error, kwargs)

    async def acall(self, *args: Any, **kwargs: Any) -> ToolOutput:
        try:
            return await super().acall(*args, **kwargs)
        except UserError as error:
            return self._error(error, kwargs)

    def _error(self, error: UserError, kwargs: dict[str, Any]) -> ToolOutput:
        return ToolOutput(content=f"Error: {error}", tool_name=self.metadata.get_name(),
                          raw_input={"args": (), "kwargs": kwargs}, raw_output=error, is_error=True)


def format_items(items: list[MemoryItem]) -> str:
    if not items:
        return "No memories."
    return "\n".join(f"[{i.id}] ({i.role}, {i.created_at:%Y-%m-%d %H:%M}) {' '.join(i.text.split())}" for i in items)


def format_hits(hits: list[LogHit]) -> str:
    if not hits:
        return "No matching memories."
    lines, seen = [], set()
    for hit in hits:
        memory_id = hit.metadata.get("memory_id") or hit.id
        if memory_id not in seen:
            seen.add(memory_id)
            lines.append(f"[{memory_id}] ({hit.metadata.get('role', '?')}) {' '.join(hit.text.split())}")
    return "\n".join(lines)


def format_events(memory_id: str, events: list[MemoryEvent]) -> str:
    if not events:
        return f"Memory {memory_id} has not been changed since it was written."
    lines = []
    for e in events:
        change = {"ADD": f"added: {e.new_text!r}", "UPDATE": f"changed {e.old_text!r} -> {e.new_text!r}",
                  "DELETE": f"deleted: {e.old_text!r}"}[e.event]
        lines.append(f"{e.at:%Y-%m-%d %H:%M:%S} {change}")
    return "\n".join(lines)


def _tool(name: str, description: str, schema: type[BaseModel], fn: Callable[..., str],
          afn: Callable[..., Awaitable[str]]) -> MemoryTool:
    return MemoryTool.from_defaults(fn=fn, async_fn=afn, name=name, description=description, fn_schema=schema)


def memory_tools(memory: ScopedMemoryVerbs) -> list[FunctionTool]:
    """search_memory, list_memories, update_memory, delete_memory and memory_history, bound to
    ``memory`` (a `DeltaMemMemory` or `DeltaMemMemoryBlock`) and its user and session."""

    def search_memory(query: str, k: int = 4) -> str:
        return format_hits(memory.search(query, k=k))

    async def asearch_memory(query: str, k: int = 4) -> str:
        return format_hits(await memory.asearch(query, k=k))

    def list_memories(limit: int | None = 20) -> str:
        return format_items(memory.list_memories(limit=limit))

    async def alist_memories(limit: int | None = 20) -> str:
        return format_items(await memory.alist_memories(limit=limit))

    def update_memory(memory_id: str, text: str) -> str:
        item = memory.update(memory_id, text)
        return f"Memory {item.id} now reads: {item.text}"

    async def aupdate_memory(memory_id: str, text: str) -> str:
        item = await memory.aupdate(memory_id, text)
        return f"Memory {item.id} now reads: {item.text}"

    def delete_memory(memory_id: str) -> str:
        memory.delete(memory_id)
        return f"Memory {memory_id} is deleted."

    async def adelete_memory(memory_id: str) -> str:
        await memory.adelete(memory_id)
        return f"Memory {memory_id} is deleted."

    def memory_history(memory_id: str) -> str:
        return format_events(memory_id, memory.history(memory_id))

    async def amemory_history(memory_id: str) -> str:
        return format_events(memory_id, await memory.ahistory(memory_id))

    return [
        _tool("search_memory", "Search what you remember about the user (past messages and notes). Returns "
              "entries as '[memory_id] (role) text', closest first. Use it before answering from memory, and "
              "to find the id of an entry to correct.", SearchMemoryArgs, search_memory, asearch_memory),
        _tool("list_memories", "List the remembered entries of this conversation, oldest first, as "
              "'[memory_id] (role, time) text'.", ListMemoriesArgs, list_memories, alist_memories),
        _tool("update_memory", "Correct a remembered entry that is wrong or out of date: give its memory_id "
              "and its whole corrected text. The old text is no longer remembered; the change is kept in "
              "the entry's history.", UpdateMemoryArgs, update_memory, aupdate_memory),
        _tool("delete_memory", "Forget a remembered entry entirely (e.g. the user asks you to forget it). "
              "Prefer update_memory to correct a fact.", MemoryIdArgs, delete_memory, adelete_memory),
        _tool("memory_history", "Show how a remembered entry changed over time (added, corrected, deleted).",
              MemoryIdArgs, memory_history, amemory_history),
    ]


__all__ = ["MemoryTool", "TOOL_NAMES", "memory_tools"]
