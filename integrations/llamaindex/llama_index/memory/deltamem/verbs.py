"""The memory verbs of `HybridMemory` (`deltamem_agents.memory.verbs`), scoped to one user and
one session, for `DeltaMemMemory` and `DeltaMemMemoryBlock`.

LlamaIndex's `BaseMemory` already owns ``get``, ``get_all``, ``put`` and ``reset`` (with other
meanings), so the verbs that would clash take other names:

====================  ========================  ===================================================
HybridMemory          here                      note
====================  ========================  ===================================================
``add``               ``add`` / ``aadd``        messages (LlamaIndex or deltamem) or one user text
``get``               ``get_memory``            ``get`` is BaseMemory's (the recent conversation)
``get_all``           ``list_memories``         ``get_all`` is BaseMemory's (the whole conversation)
``search``            ``search``                log hits closest to a query
``update``            ``update``                the state is re-derived by replay
``delete``            ``delete``                the state is rebuilt without the entry
``history``           ``history``               audit events, oldest first
``reset``             ``reset_user``            every session of the user; ``reset()`` forgets
                                                only this memory's session (BaseMemory's meaning)
====================  ========================  ===================================================

Every id verb is scoped to this user *and session*: an entry of another session or another user
reads as unknown (`MemoryNotFoundError`), so an agent's tools can only touch its own memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from llama_index.core.base.llms.types import ChatMessage
from llama_index.llms.deltamem.utils import to_deltamem

from deltamem_agents.memory.audit import MemoryEvent
from deltamem_agents.memory.textlog import LogHit
from deltamem_agents.memory.verbs import MemoryItem, MemoryNotFoundError, ResetReport
from deltamem_agents.session import ChatMessage as DeltaMemMessage
from deltamem_agents.session.session import MessageLike

if TYPE_CHECKING:
    from deltamem_agents.memory.hybrid import HybridMemory

#: What `add` accepts: LlamaIndex messages, deltamem messages or dicts, or one user text.
Addable = Sequence[ChatMessage | MessageLike] | str

#: The audit's ``call`` for changes made through this integration.
CALL = "llamaindex"


def as_deltamem(messages: Addable) -> list[DeltaMemMessage] | str:
    """LlamaIndex messages converted; anything else is left for `HybridMemory.add` to read."""
    if isinstance(messages, str):
        return messages
    return [to_deltamem(m) if isinstance(m, ChatMessage) else m for m in messages]  # type: ignore[misc]


class ScopedMemoryVerbs:
    """The verbs on ``self.hybrid`` with ``self.user_id`` and ``self.session_id`` as scope.

    Mixed into pydantic models that define ``user_id``, ``session_id`` and ``hybrid``. Hooks
    (`_verbs_lock`, `_added`, `_updated`, `_deleted`) let `DeltaMemMemory` keep its view of the
    conversation in step with the session the verbs change."""

    if TYPE_CHECKING:
        user_id: str
        session_id: str

        @property
        def hybrid(self) -> HybridMemory: ...

    # -- hooks (no-ops for a block, which keeps no view) ----------------------------------------
    @contextlib.contextmanager
    def _verbs_lock(self) -> Iterator[None]:
        yield

    def _added(self, messages: list[DeltaMemMessage], before: list[DeltaMemMessage]) -> None:
        """``messages`` were appended to the session, which held ``before``."""

    def _updated(self, old: MemoryItem, new_text: str) -> None:
        """The session's message holding ``old`` now reads ``new_text``."""

    def _deleted(self, old: MemoryItem) -> None:
        """The session's message holding ``old`` is gone."""

    # -- sync verbs ------------------------------------------------------------------------------
    def add(self, messages: Addable, *, metadata: dict[str, str | int | float | bool] | None = None) -> list[str]:
        """Write messages (or one user text) into this session's state and log; returns the
        memory ids of what was logged (system messages are written into the state only)."""
        from llama_index.llms.deltamem.utils import session_messages

        converted = as_deltamem(messages)
        new = [DeltaMemMessage(role="user", content=converted)] if isinstance(converted, str) else converted
        with self._verbs_lock():
            before = session_messages(self.hybrid, session_id=self.session_id, user_id=self.user_id)
            ids = self.hybrid.add(new, session_id=self.session_id, user_id=self.user_id, metadata=metadata, call=CALL)
            self._added([m if isinstance(m, DeltaMemMessage) else DeltaMemMessage.model_validate(m) for m in new], before)
        return ids

    def get_memory(self, memory_id: str) -> MemoryItem:
        """The entry ``memory_id`` (a memory id or a chunk id from `search`) of this session."""
        item = self.hybrid.get(memory_id, user_id=self.user_id)
        if item.session_id != self.session_id:  # another session of the same user: not this memory's
            raise MemoryNotFoundError(
                f"no memory {memory_id!r} in session {self.session_id!r} of user {self.user_id!r} "
                "(list_memories() lists this memory's entries)"
            )
        return item

    def list_memories(
        self, *, since: datetime | None = None, until: datetime | None = None,
        metadata: dict[str, Any] | None = None, limit: int | None = None,
    ) -> list[MemoryItem]:
        """This session's entries in log order (`HybridMemory.get_all` with this scope)."""
        return self.hybrid.get_all(user_id=self.user_id, session_id=self.session_id, since=since, until=until,
                                   metadata=metadata, limit=limit)

    def search(self, query: str, *, k: int = 4) -> list[LogHit]:
        """This session's text-log entries closest to ``query`` (verbatim, with metadata)."""
        return self.hybrid.search(query, user_id=self.user_id, session_id=self.session_id, k=k)

    def update(self, memory_id: str, text: str) -> MemoryItem:
        """Correct an entry: the session's message is replaced and its state re-derived by replay;
        the entry keeps its id."""
        with self._verbs_lock():
            old = self.get_memory(memory_id)
            item = self.hybrid.update(old.id, text, user_id=self.user_id, call=CALL)
            if item.text != old.text:
                self._updated(old, item.text)
        return item

    def delete(self, memory_id: str) -> Any:
        """Forget an entry (the state is rebuilt without it); returns `HybridMemory.delete`'s
        `ForgetReport`. Its history stays readable."""
        with self._verbs_lock():
            old = self.get_memory(memory_id)
            report = self.hybrid.delete(old.id, user_id=self.user_id, call=CALL)
            self._deleted(old)
        return report

    def history(self, memory_id: str) -> list[MemoryEvent]:
        """Every recorded change of the entry, oldest first (a deleted entry keeps its history)."""
        events = self.hybrid.history(memory_id, user_id=self.user_id)
        if any(e.session_id != self.session_id for e in events):
            raise MemoryNotFoundError(f"no memory {memory_id!r} in session {self.session_id!r} of user {self.user_id!r}")
        if not events:
            self.get_memory(memory_id)  # a chat-turn entry never changed: still only this session's
        return events

    def reset_user(self) -> ResetReport:
        """Delete everything of this memory's user: every session, log entry and audit event.
        (``reset()`` of `DeltaMemMemory` forgets only its own session.)"""
        with self._verbs_lock():
            report = self.hybrid.reset(user_id=self.user_id)
            self._deleted_all()
        return report

    def _deleted_all(self) -> None:
        """Every session of the user is gone."""

    # -- async twins: each runs start to end in one worker thread (the store lock is per thread) --
    async def aadd(self, messages: Addable, *, metadata: dict[str, str | int | float | bool] | None = None) -> list[str]:
        return await asyncio.to_thread(self.add, messages, metadata=metadata)

    async def aget_memory(self, memory_id: str) -> MemoryItem:
        return await asyncio.to_thread(self.get_memory, memory_id)

    async def alist_memories(self, **kwargs: Any) -> list[MemoryItem]:
        return await asyncio.to_thread(lambda: self.list_memories(**kwargs))

    async def asearch(self, query: str, *, k: int = 4) -> list[LogHit]:
        return await asyncio.to_thread(self.search, query, k=k)

    async def aupdate(self, memory_id: str, text: str) -> MemoryItem:
        return await asyncio.to_thread(self.update, memory_id, text)

    async def adelete(self, memory_id: str) -> Any:
        return await asyncio.to_thread(self.delete, memory_id)

    async def ahistory(self, memory_id: str) -> list[MemoryEvent]:
        return await asyncio.to_thread(self.history, memory_id)

    async def areset_user(self) -> ResetReport:
        return await asyncio.to_thread(self.reset_user)


__all__ = ["Addable", "ScopedMemoryVerbs", "as_deltamem"]
