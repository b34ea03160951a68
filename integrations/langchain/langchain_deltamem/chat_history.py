"""`DeltaMemChatMessageHistory`: a LangChain chat history kept in the δ-mem text log.

`RunnableWithMessageHistory` and other LangChain memory patterns read and append a
`BaseChatMessageHistory`. This one keeps the messages in the same verbatim, searchable log that
`DeltaMemLLM` writes, so what a chain appends can be retrieved later and what the model was
told shows up in the history. Entries the model already logged are not stored twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage

from deltamem_agents.memory import LogHit, TextLog
from deltamem_agents.memory.chunking import ends_sentence
from deltamem_agents.memory.shared import shared_textlog
from deltamem_agents.session import validate_id
from deltamem_agents.session.session import template_view
from langchain_deltamem._messages import from_logged, to_chat_message

if TYPE_CHECKING:
    from langchain_deltamem.chat_models import DeltaMemLLM


def merge_chunks(parts: Sequence[str]) -> str:
    """Reassemble a message the log stored in chunks.

    Consecutive chunks of a paragraph repeat whole sentences (the overlap); that repeat is
    removed. Chunks that do not overlap were split at a paragraph break and are joined with a
    blank line, so white space at such a joint may differ from the original."""
    text = parts[0] if parts else ""
    for part in parts[1:]:
        overlap = 0
        for size in range(min(len(text), len(part)), 0, -1):
            starts_sentence = size == len(text) or text[-size - 1].isspace()
            ends_at_sentence = size == len(part) or part[size] == "\n" or (
                part[size].isspace() and ends_sentence(part[:size])
            )
            if starts_sentence and ends_at_sentence and text.endswith(part[:size]):
                overlap = size
                break
        text = text + part[overlap:] if overlap else f"{text}\n\n{part}"
    return text


class DeltaMemChatMessageHistory(BaseChatMessageHistory):
    """The chat messages of one session, kept in the text log.

    Limits that come from the log: the same text from the same role is stored once per session
    (a repeated "ok" appears once), and ``clear()`` removes log entries only; the session's
    OSAM state is untouched (``HybridMemory.forget`` forgets both).

    .. code-block:: python

        from langchain_core.runnables.history import RunnableWithMessageHistory

        chain = RunnableWithMessageHistory(
            prompt | llm, lambda session_id: DeltaMemChatMessageHistory(session_id),
            input_messages_key="question", history_messages_key="history",
        )
        chain.invoke({"question": "hi"}, config={"configurable": {"session_id": "trip"}})
    """

    def __init__(
        self,
        session_id: str,
        *,
        user_id: str = "default",
        textlog: TextLog | None = None,
        textlog_path: str | None = None,
        source: str = "chat",
    ) -> None:
        self.session_id = validate_id("session_id", session_id)
        self.user_id = validate_id("user_id", user_id)
        self.textlog = textlog if textlog is not None else shared_textlog(textlog_path)
        self.source = source

    @classmethod
    def from_llm(cls, llm: DeltaMemLLM, session_id: str | None = None, **kwargs: Any) -> DeltaMemChatMessageHistory:
        """The history of a session in the log that ``llm`` writes."""
        textlog = llm.hybrid_memory.textlog
        if textlog is None:
            raise ValueError("this DeltaMemLLM keeps no text log (hybrid=False); pass textlog= or textlog_path= instead")
        kwargs.setdefault("user_id", llm.user_id)
        return cls(session_id or llm.session_id, textlog=textlog, **kwargs)

    def _entries(self) -> list[LogHit]:
        hits = self.textlog.list(user_id=self.user_id, session_id=self.session_id)
        return [hit for hit in hits if hit.metadata.get("kind") == "message"]

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """The session's messages in log order, long ones reassembled from their chunks."""
        groups: dict[str, list[LogHit]] = {}
        for hit in self._entries():
            groups.setdefault(str(hit.metadata.get("content_hash", hit.id)), []).append(hit)
        rows: list[tuple[str, str, dict[str, Any]]] = []
        for hits in groups.values():
            hits.sort(key=lambda h: int(h.metadata.get("chunk", 0)))
            rows.append((str(hits[0].metadata.get("role")), merge_chunks([h.text for h in hits]), hits[0].metadata))
        out: list[BaseMessage] = []
        for index, (role, text, metadata) in enumerate(rows):
            call_ids: list[str] = []
            if role == "assistant":  # its calls are answered by the tool results right after it
                for later_role, _, later in rows[index + 1 :]:
                    if later_role != "tool":
                        break
                    if later.get("tool_call_id"):
                        call_ids.append(str(later["tool_call_id"]))
            out.append(from_logged(role, text, metadata, call_ids=call_ids))
        return out

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Log messages (a user message opens a new turn); text already logged is kept once."""
        turn = max((int(h.metadata.get("turn", -1)) for h in self._entries()), default=-1)
        for index, message in enumerate(messages):
            chat = to_chat_message(message, index=index)
            if chat.role == "user":
                turn += 1
            text = template_view(chat)["content"]  # tool calls as the model reads them
            if not text.strip():
                continue  # the log keeps text; an empty message has none
            self.textlog.add_message(
                chat.model_copy(update={"content": text, "tool_calls": None}),
                user_id=self.user_id,
                session_id=self.session_id,
                turn=max(turn, 0),
                source=self.source,
            )

    def clear(self) -> None:
        """Delete this session's entries from the log (documents included; the state stays)."""
        self.textlog.delete_session(user_id=self.user_id, session_id=self.session_id)


__all__ = ["DeltaMemChatMessageHistory"]
