"""`DeltaMemRetriever`: LangChain retrieval over the δ-mem text log.

The text log keeps every message and document of a session verbatim (what the OSAM state only
holds as a lossy summary), searchable by meaning. This retriever is that search as a LangChain
`BaseRetriever`, so RAG chains can quote what was said.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig, run_in_executor
from pydantic import ConfigDict, Field

from deltamem_agents.memory import LogHit, TextLog
from deltamem_agents.memory.shared import shared_textlog
from deltamem_agents.session import validate_id
from langchain_deltamem.chat_models import scope_from_config

if TYPE_CHECKING:
    from langchain_deltamem.chat_models import DeltaMemLLM


def hit_to_document(hit: LogHit) -> Document:
    """A log entry as a `Document`: its verbatim text, its metadata and its search distance."""
    metadata = dict(hit.metadata)
    if hit.distance is not None:
        metadata["distance"] = hit.distance
    return Document(page_content=hit.text, metadata=metadata, id=hit.id)


class DeltaMemRetriever(BaseRetriever):
    """Searches the text log of one session (or all sessions of a user) by meaning.

    Like `DeltaMemLLM`, it reads ``session_id`` (or ``thread_id``) and ``user_id`` from the
    run's ``configurable`` when given, so one chain config scopes both.

    .. code-block:: python

        retriever = DeltaMemRetriever(session_id="trip", k=3)
        retriever.invoke("Where do I land?")            # the closest log entries, verbatim
        retriever = DeltaMemRetriever.from_llm(llm)     # the log the model writes
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    textlog: TextLog | None = Field(None, exclude=True, description="an injected text log (default: the shared one)")
    textlog_path: str | None = Field(None, description="text log folder (default: $DELTAMEM_HOME/textlog)")
    user_id: str = Field("default", description="whose log is searched, unless the run's config names a user")
    session_id: str = Field("default", description="which session is searched, unless the run's config names one")
    scope: Literal["session", "user"] = Field("session", description='"user" searches all sessions of the user')
    k: int = Field(4, ge=1, description="most entries returned")
    max_distance: float | None = Field(None, ge=0.0, description="leave out entries farther than this")
    include_documents: bool = Field(True, description="also return ingested documents, not only chat messages")

    @classmethod
    def from_llm(cls, llm: DeltaMemLLM, **kwargs: Any) -> DeltaMemRetriever:
        """A retriever over the log that ``llm`` writes, scoped to its default user and session."""
        textlog = llm.hybrid_memory.textlog
        if textlog is None:
            raise ValueError("this DeltaMemLLM keeps no text log (hybrid=False): there is nothing to retrieve from")
        kwargs.setdefault("user_id", llm.user_id)
        kwargs.setdefault("session_id", llm.session_id)
        return cls(textlog=textlog, **kwargs)

    def _log(self) -> TextLog:
        return self.textlog if self.textlog is not None else shared_textlog(self.textlog_path)

    def invoke(self, input: str, config: RunnableConfig | None = None, **kwargs: Any) -> list[Document]:
        return super().invoke(input, config, **scope_from_config(config, kwargs))

    async def ainvoke(self, input: str, config: RunnableConfig | None = None, **kwargs: Any) -> list[Document]:
        return await super().ainvoke(input, config, **scope_from_config(config, kwargs))

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        session_id: str | None = None,
        user_id: str | None = None,
    ) -> list[Document]:
        user = validate_id("user_id", user_id or self.user_id)
        session = None if self.scope == "user" else validate_id("session_id", session_id or self.session_id)
        # Documents can crowd out messages (or the other way round): ask for more, then filter.
        want = self.k if self.include_documents else self.k * 3
        hits = self._log().search(query, user_id=user, session_id=session, k=want, max_distance=self.max_distance)
        if not self.include_documents:
            hits = [hit for hit in hits if hit.metadata.get("kind") != "document"]
        return [hit_to_document(hit) for hit in hits[: self.k]]

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        session_id: str | None = None,
        user_id: str | None = None,
    ) -> list[Document]:
        return await run_in_executor(
            None,
            self._get_relevant_documents,
            query,
            run_manager=run_manager.get_sync(),
            session_id=session_id,
            user_id=user_id,
        )


__all__ = ["DeltaMemRetriever"]
