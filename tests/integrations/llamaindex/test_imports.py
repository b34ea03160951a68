"""The public surface, pinned; and the namespace-package layout of the LlamaIndex ecosystem."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import llama_index.llms.deltamem as llms
import llama_index.memory.deltamem as memory

PACKAGE = Path(__file__).resolve().parents[3] / "integrations" / "llamaindex"


def test_llms_exports():
    assert llms.__all__ == ["ConversationForkError", "DeltaMemLLM"]
    assert all(hasattr(llms, name) for name in llms.__all__)


def test_memory_exports():
    assert memory.__all__ == ["DeltaMemMemory", "DeltaMemMemoryBlock", "MemoryTool", "ScopedMemoryVerbs", "memory_tools"]
    assert all(hasattr(memory, name) for name in memory.__all__)


def test_namespace_packages_have_no_init():
    for folder in ("llama_index", "llama_index/llms", "llama_index/memory"):
        assert (PACKAGE / folder).is_dir() and not (PACKAGE / folder / "__init__.py").exists(), folder
    # llama_index.core (another distribution) and ours share the namespace
    import llama_index

    assert str(PACKAGE / "llama_index") in list(llama_index.__path__)


def test_installed_distribution_depends_on_deltamem_and_llama_index_core():
    requires = metadata.requires("llama-index-deltamem") or []
    names = {r.split(";")[0].split(">")[0].split("<")[0].split("=")[0].strip() for r in requires}
    assert {"deltamem-agents", "llama-index-core"} <= names
