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

__all__ = [
    "DeltaMemChatMessageHistory",
    "DeltaMemLLM",
    "DeltaMemRetriever",
    "__version__",
]
