"""`DeltaMemMemoryBlock`: a δ-mem session as a long-term block of LlamaIndex's `Memory`.

LlamaIndex's `Memory` keeps a short-term FIFO of messages and, when it overflows, flushes the
oldest ones into its blocks (`aput`); on every read it asks each block, by priority, for text to
put beside the conversation (`aget`). This block writes what is flushed into a δ-mem session (its
OSAM state and its text log, through `HybridMemory.add`) and answers a read with the session's
log entries closest to the latest user message, so old turns come back when they matter. The
block has the memory verbs too (`ScopedMemoryVerbs`), and `memory_tools(block)` gives an agent
tools to read and correct what it remembers.
"""

from __future__ import annotations

import asyncio
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, MessageRole, TextBlock
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.memory.memory import BaseMemoryBlock
from llama_index.llms.deltamem.base import DeltaMemLLM
from llama_index.llms.deltamem.utils import DEFAULT_SESSION_ID, shared_hybrid, to_deltamem
from llama_index.memory.deltamem.verbs import CALL, ScopedMemoryVerbs

from deltamem_agents.memory.hybrid import HybridMemory
from deltamem_agents.memory.textlog import LogHit, content_hash
from deltamem_agents.session import SessionKey
from deltamem_agents.session.session import template_view

#: Characters per token `atruncate` assumes when it drops lines (LlamaIndex's own estimate).
_CHARS_PER_TOKEN = 4


class DeltaMemMemoryBlock(ScopedMemoryVerbs, BaseMemoryBlock[str]):
    """Long-term memory for a LlamaIndex `Memory`: flushed messages go into a δ-mem session; a
    read returns its log entries closest to the latest user message, one line each.

    Examples:
        ```python
        from llama_index.core.memory import Memory, StaticMemoryBlock
        from llama_index.memory.deltamem import DeltaMemMemoryBlock, memory_tools

        block = DeltaMemMemoryBlock(session_id="trip", user_id="ada", priority=1)
        memory = Memory.from_defaults(session_id="trip", token_limit=4000, memory_blocks=[
            StaticMemoryBlock(static_content="Ada prefers trains.", priority=0), block,
        ])
        agent = FunctionAgent(tools=memory_tools(block), llm=llm)
        await agent.run("Where do I land?", memory=memory)
        ```

    The block's ``session_id`` is a δ-mem session, not the `Memory`'s chat-store key (which the
    `Memory` passes to ``aget``/``aput`` and the block ignores). When a `DeltaMemLLM` answers on
    the same session it has written each message already; a flushed message whose text the
    session's log already holds is therefore not written again.
    """

    name: str = Field(default="DeltaMemRecall", description="the block's name (its tag in the system message)")
    session_id: str = Field(default=DEFAULT_SESSION_ID, description="the δ-mem session flushed messages go into")
    user_id: str = Field(default="default", description="owner of the session and of its text-log entries")
    top_k: int = Field(default=4, ge=1, description="log entries a read returns")
    show_ids: bool = Field(
        default=True, description="prefix each entry with its memory id, so an agent can update or delete it"
    )

    _hybrid: HybridMemory | None = PrivateAttr(default=None)
    _llm: DeltaMemLLM | None = PrivateAttr(default=None)

    def __init__(self, *, hybrid: HybridMemory | None = None, llm: DeltaMemLLM | None = None, **kwargs: Any) -> None:
        if isinstance(llm, DeltaMemLLM):  # the LLM's session unless told otherwise
            kwargs.setdefault("session_id", llm.session_id)
            kwargs.setdefault("user_id", llm.user_id)
        super().__init__(**kwargs)
        self._hybrid, self._llm = hybrid, llm
        SessionKey(user_id=self.user_id, session_id=self.session_id)  # a bad id fails here, not mid-run

    @property
    def hybrid(self) -> HybridMemory:
        """The `HybridMemory` behind the block (the LLM's, else the process-wide default one)."""
        if self._hybrid is None and self._llm is not None:
            self._hybrid = self._llm.hybrid
        if self._hybrid is None:
            self._hybrid = shared_hybrid(
                backbone=None, adapter="auto", store_path=None, device=None, dtype=None, text_log=True
            )
        return self._hybrid

    # -- BaseMemoryBlock -------------------------------------------------------------------------
    async def _aget(self, messages: list[ChatMessage] | None = None, **block_kwargs: Any) -> str:
        """The entries closest to the latest user message ("" when there is none or nothing matches)."""
        query = _latest_user_text(messages or [])
        if not query:
            return ""
        hits = await self.asearch(query, k=self.top_k)
        return self.format(hits)

    async def _aput(self, messages: list[ChatMessage]) -> None:
        """Write the flushed messages into the session's state and log (each message once)."""
        await asyncio.to_thread(self._write, messages)

    async def atruncate(self, content: str, tokens_to_truncate: int) -> str | None:
        """Drop the farthest entries (the last lines) until about ``tokens_to_truncate`` are gone."""
        lines = content.splitlines()
        budget = tokens_to_truncate * _CHARS_PER_TOKEN
        while lines and budget > 0:
            budget -= len(lines.pop()) + 1
        return "\n".join(lines) or None

    # -- helpers -----------------------------------------------------------------------------------
    def format(self, hits: list[LogHit]) -> str:
        """One line per entry, closest first; with ``show_ids``, its memory id in brackets."""
        lines: list[str] = []
        seen: set[str] = set()
        for hit in hits:
            memory_id = hit.metadata.get("memory_id") or hit.id
            if memory_id in seen:  # two chunks of one entry: its closest chunk is enough
                continue
            seen.add(memory_id)
            text = " ".join(hit.text.split())
            lines.append(f"- [{memory_id}] {text}" if self.show_ids else f"- {text}")
        return "\n".join(lines)

    def _write(self, messages: list[ChatMessage]) -> None:
        log = self.hybrid.textlog
        new = []
        for message in messages:
            converted = to_deltamem(message)
            if converted.role != "system" and log is not None:
                digest = content_hash(self.user_id, self.session_id, converted.role, template_view(converted)["content"])
                if log.ids_for_hashes([digest], user_id=self.user_id, session_id=self.session_id):
                    continue  # the session has it (a DeltaMemLLM wrote it, or it was flushed before)
            new.append(converted)
        if new:
            self.hybrid.add(new, session_id=self.session_id, user_id=self.user_id, call=f"{CALL}.block")


def _latest_user_text(messages: list[ChatMessage]) -> str:
    for message in reversed(messages):
        if message.role == MessageRole.USER:
            return " ".join(b.text for b in message.blocks if isinstance(b, TextBlock)).strip()
    return ""


__all__ = ["DeltaMemMemoryBlock"]
