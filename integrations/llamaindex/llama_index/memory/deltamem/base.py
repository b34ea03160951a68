"""`DeltaMemMemory`: a δ-mem session as LlamaIndex memory (``memory=`` of agents and chat engines).

The session is the memory: its conversation, its OSAM state and its text-log entries persist
in the session store. The memory keeps the conversation *as the agent has put it* (its view);
the session keeps what the model has read. They meet at the end of a turn:

* with a `DeltaMemLLM` on the same session, the model already wrote every message it was sent
  and every answer, so the memory finds nothing new and writes nothing;
* with any other LLM, the memory writes the turn (question, tool calls and results, answer)
  into the state and the text log itself, once the answer is put.

Either way each message is written once. A turn is complete when an assistant message without
tool calls is put.

The memory verbs (`ScopedMemoryVerbs`: ``add``, ``get_memory``, ``list_memories``, ``search``,
``update``, ``delete``, ``history``, ``reset_user``, and their async twins) read and correct the
session's entries; `memory_tools` makes them an agent's tools. ``update`` and ``delete`` also
correct the memory's view, so the next turn neither brings the old text back nor forks.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, MessageRole, TextBlock, ToolCallBlock
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.memory import BaseMemory
from llama_index.llms.deltamem.base import DeltaMemLLM
from llama_index.llms.deltamem.utils import (
    DEFAULT_SESSION_ID,
    session_messages,
    shared_hybrid,
    to_deltamem,
    to_llama,
    without_notes,
)

from llama_index.memory.deltamem.verbs import ScopedMemoryVerbs

from deltamem_agents.memory.hybrid import HybridMemory
from deltamem_agents.memory.notes import snippet_text
from deltamem_agents.memory.verbs import MemoryItem
from deltamem_agents.session import ChatMessage as DeltaMemMessage
from deltamem_agents.session import SessionKey
from deltamem_agents.session.session import conversation_key, unseen_messages


class DeltaMemMemory(ScopedMemoryVerbs, BaseMemory):
    """The conversation of a δ-mem session, its OSAM state and its text log, as LlamaIndex memory.

    Examples:
        ```python
        from llama_index.core.agent.workflow import FunctionAgent
        from llama_index.llms.deltamem import DeltaMemLLM
        from llama_index.memory.deltamem import DeltaMemMemory

        llm = DeltaMemLLM(session_id="trip", user_id="ada")
        memory = DeltaMemMemory.from_defaults(llm=llm)  # the same session, written once
        agent = FunctionAgent(tools=[...], llm=llm)
        await agent.run("I land in Lisbon on Friday.", memory=memory)
        ```

    ``reset()`` forgets the session (messages, state and log entries), like emptying a chat store;
    ``reset_user()`` forgets every session of the user. ``get``/``get_all`` return the conversation
    (BaseMemory); ``get_memory``/``list_memories`` return log entries (`MemoryItem`).
    """

    session_id: str = Field(default=DEFAULT_SESSION_ID, description="the δ-mem session this memory is")
    user_id: str = Field(default="default", description="owner of the session and of its text-log entries")
    history_limit: int | None = Field(
        default=None, ge=1,
        description="most recent messages `get` returns (from a user message on); None: all. Older "
        "turns stay in the δ-mem state and the text log",
    )
    recall_k: int = Field(
        default=0, ge=0,
        description="text-log hits `get(input)` adds as a system message; for LLMs other than DeltaMemLLM, "
        "whose router retrieves by itself",
    )

    _hybrid: HybridMemory | None = PrivateAttr(default=None)
    _llm: DeltaMemLLM | None = PrivateAttr(default=None)
    _view: list[ChatMessage] | None = PrivateAttr(default=None)
    _lock: threading.RLock = PrivateAttr(default_factory=threading.RLock)

    def __init__(self, *, hybrid: HybridMemory | None = None, llm: DeltaMemLLM | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._hybrid, self._llm = hybrid, llm
        SessionKey(user_id=self.user_id, session_id=self.session_id)  # a bad id fails here, not mid-run

    @classmethod
    def class_name(cls) -> str:
        return "DeltaMemMemory"

    @classmethod
    def from_defaults(
        cls,
        llm: Any = None,
        *,
        session_id: str | None = None,
        user_id: str | None = None,
        hybrid: HybridMemory | None = None,
        chat_history: list[ChatMessage] | None = None,
        token_limit: int | None = None,
        **kwargs: Any,
    ) -> DeltaMemMemory:
        """The memory of ``llm``'s session when it is a `DeltaMemLLM` (same `HybridMemory`, same
        ids), else of the default session. ``chat_history`` is `set` at once. ``token_limit`` is
        accepted for chat engines' ``memory_cls=`` and unused: the session bounds its own context."""
        source = llm if isinstance(llm, DeltaMemLLM) else None
        if source is not None:
            session_id = session_id or source.session_id
            user_id = user_id or source.user_id
        ids = {k: v for k, v in (("session_id", session_id), ("user_id", user_id)) if v is not None}
        memory = cls(hybrid=hybrid, llm=source, **ids, **kwargs)
        if chat_history:
            memory.set(chat_history)
        return memory

    @property
    def hybrid(self) -> HybridMemory:
        """The `HybridMemory` behind this memory (the process-wide default one unless given)."""
        if self._hybrid is None and self._llm is not None:
            self._hybrid = self._llm.hybrid  # the LLM's, loaded when first needed
        if self._hybrid is None:
            self._hybrid = shared_hybrid(
                backbone=None, adapter="auto", store_path=None, device=None, dtype=None, text_log=True
            )
        return self._hybrid

    # -- BaseMemory --------------------------------------------------------------------------------
    def get(self, input: str | None = None, **kwargs: Any) -> list[ChatMessage]:
        """The recent conversation (``history_limit``), after text-log notes for ``input`` when
        ``recall_k`` > 0. Other keywords (e.g. chat engines' ``initial_token_count``) are unused."""
        with self._lock:
            view = self._loaded()
            start = 0
            if self.history_limit is not None and len(view) > self.history_limit:
                start = len(view) - self.history_limit
                first_user = next((i for i in range(start, len(view)) if view[i].role == MessageRole.USER), None)
                start = first_user if first_user is not None else start
            messages = list(view[start:])
        if input and self.recall_k:
            hits = self.search(input, k=self.recall_k)
            if hits:
                messages.insert(0, ChatMessage(role=MessageRole.SYSTEM, content=snippet_text(hit.text for hit in hits)))
        return messages

    def get_all(self) -> list[ChatMessage]:
        """The whole conversation as the agent has put it (system prompts and notes left out)."""
        with self._lock:
            return list(self._loaded())

    def put(self, message: ChatMessage) -> None:
        self.put_messages([message])

    def put_messages(self, messages: list[ChatMessage]) -> None:
        """Add messages; once a turn is complete, write whatever the session has not seen."""
        with self._lock:
            self._loaded().extend(messages)
            if any(_turn_complete(m) for m in messages):
                self._sync()

    def set(self, messages: list[ChatMessage]) -> None:
        """Make ``messages`` the conversation. The session only grows: messages it already has
        (the longest run that repeats its end) are kept once; the others are written."""
        with self._lock:
            self._view = list(messages)
            self._sync()

    def reset(self) -> None:
        """Forget the session: its messages, its δ-mem state and its text-log entries."""
        with self._lock:
            self.hybrid.forget(session_id=self.session_id, user_id=self.user_id)
            self._view = []

    # -- the verbs keep the view in step with the session they change --------------------------
    @contextlib.contextmanager
    def _verbs_lock(self) -> Iterator[None]:
        with self._lock:
            yield

    def _added(self, messages: list[DeltaMemMessage], before: list[DeltaMemMessage]) -> None:
        """Put the added messages where the session has them: after what the view shares with
        the session before the add, ahead of messages the memory has yet to write (a turn
        answered by another LLM). A view behind the session (the DeltaMemLLM wrote ahead) gets
        them at its end."""
        if self._view is None:
            return  # loaded from the session when first read
        view = self._view
        spoken = [conversation_key(m) for m in before if m.role != "system"]
        at = [i for i, m in enumerate(view) if m.role != MessageRole.SYSTEM]
        common = 0
        while common < min(len(at), len(spoken)) and conversation_key(to_deltamem(view[at[common]])) == spoken[common]:
            common += 1
        pos = (at[common] if common < len(at) else len(view)) if common == len(spoken) else len(view)
        view[pos:pos] = [to_llama(m) for m in messages if m.role != "system"]

    def _matches(self, old: MemoryItem) -> list[int]:
        """Where the view holds the message of entry ``old`` (same role and visible text)."""
        role = "user" if old.role == "document" else old.role
        key = conversation_key(DeltaMemMessage(role=role, content=old.text))[:2]
        view = self._view or []
        return [i for i, m in enumerate(view)
                if m.role != MessageRole.SYSTEM and conversation_key(to_deltamem(m))[:2] == key]

    def _updated(self, old: MemoryItem, new_text: str) -> None:
        if self._view is None:
            return
        for i in self._matches(old):
            message = self._view[i]
            calls = [b for b in message.blocks if isinstance(b, ToolCallBlock)]
            self._view[i] = message.model_copy(update={"blocks": [TextBlock(text=new_text), *calls]})

    def _deleted(self, old: MemoryItem) -> None:
        if self._view is None:
            return
        gone = set(self._matches(old))
        self._view = [m for i, m in enumerate(self._view) if i not in gone]

    def _deleted_all(self) -> None:
        self._view = []

    def _loaded(self) -> list[ChatMessage]:
        if self._view is None:
            said = session_messages(self.hybrid, session_id=self.session_id, user_id=self.user_id)
            self._view = [to_llama(m) for m in without_notes(said)]
        return self._view

    def _sync(self) -> None:
        """Write what the session has not seen of the view, up to its last complete turn (a
        trailing question is left to the LLM, which writes it with its answer)."""
        view = self._loaded()
        end = next((i + 1 for i in range(len(view) - 1, -1, -1) if _turn_complete(view[i])), 0)
        if not end:
            return
        said = session_messages(self.hybrid, session_id=self.session_id, user_id=self.user_id)
        new = unseen_messages(said, [to_deltamem(m) for m in view[:end]])
        if new:
            self.hybrid.ingest(new, session_id=self.session_id, user_id=self.user_id)


def _turn_complete(message: ChatMessage) -> bool:
    """An assistant message that calls no tool ends a turn."""
    calls = [b for b in message.blocks if isinstance(b, ToolCallBlock)] or message.additional_kwargs.get("tool_calls")
    return message.role == MessageRole.ASSISTANT and not calls
