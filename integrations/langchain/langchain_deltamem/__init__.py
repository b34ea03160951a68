"""LangChain integration of deltamem-agents: a chat model whose δ-mem memory follows the
conversation, a retriever over the verbatim text log, and a chat history kept in that log."""

from importlib import metadata

from langchain_deltamem.chat_history import DeltaMemChatMessageHistory
from langchain_deltamem.chat_models import DeltaMemLLM
from langchain_deltamem.retrievers import DeltaMemRetriever

try:
    __version__ = metadata.version("langchain-deltamem")
except metadata.PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = ""



def __getattr__(name: str) -> object:
    """``DeltaMemStore`` (the LangGraph store) is imported on first use: it needs the optional
    ``langgraph`` extra (``pip install 'langchain-deltamem[langgraph]'``)."""
    if name == "DeltaMemStore":
        from langchain_deltamem.store import DeltaMemStore

        return DeltaMemStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DeltaMemChatMessageHistory",
    "DeltaMemLLM",
    "DeltaMemRetriever",
    "__version__",
]
