"""One runtime, one text log and one `HybridMemory` per configuration in a process, for every face.

LangChain and LlamaIndex code creates model objects freely (one per chain, per agent, per
`bind`), with retrievers, histories and memories beside them. None of them may load the
backbone or open the Chroma store again, and an LLM and a memory built from the same settings
must talk through the same objects. Folders are resolved when asked for, so a changed
``DELTAMEM_HOME`` gives other folders, not the first ones the process saw.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Literal

from deltamem_agents.memory.hybrid import HybridMemory
from deltamem_agents.memory.textlog import TextLog
from deltamem_agents.memory.textlog_config import TextLogConfig, default_textlog_path
from deltamem_agents.runtime import DeltaMemRuntime

__all__ = ["shared_memory", "shared_runtime", "shared_textlog"]

_GUARD = threading.Lock()
_TEXTLOGS: dict[str, TextLog] = {}
_MEMORIES: dict[tuple[int, str | None], HybridMemory] = {}


def _folder(path: str | Path | None, default: Path) -> str:
    return str(Path(path if path is not None else default).expanduser().resolve())


def shared_runtime(
    backbone: str | None = None,
    *,
    adapter: str | Path | Literal["auto"] | None = "auto",
    store: str | Path | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> DeltaMemRuntime:
    """The process's runtime for this configuration (`DeltaMemRuntime.shared`: loaded once,
    the default store folder read from ``DELTAMEM_HOME`` now)."""
    return DeltaMemRuntime.shared(backbone, adapter=adapter, store=store, device=device, dtype=dtype)


def shared_textlog(path: str | Path | None = None) -> TextLog:
    """The text log in ``path`` (default: ``$DELTAMEM_HOME/textlog``), opened once per process."""
    folder = _folder(path, default_textlog_path())
    with _GUARD:
        log = _TEXTLOGS.get(folder)
        if log is None:
            log = TextLog(TextLogConfig(path=Path(folder)))
            _TEXTLOGS[folder] = log
        return log


def shared_memory(runtime: DeltaMemRuntime, textlog_path: str | Path | None = None, *, hybrid: bool = True) -> HybridMemory:
    """One `HybridMemory` per runtime and text log folder (``hybrid=False``: state only, no log)."""
    folder = _folder(textlog_path, default_textlog_path()) if hybrid else None
    key = (id(runtime), folder)
    with _GUARD:
        memory = _MEMORIES.get(key)
        if memory is not None and memory.runtime is runtime:
            return memory
    textlog = shared_textlog(folder) if folder is not None else None  # outside the guard: it takes it
    with _GUARD:
        memory = _MEMORIES.get(key)
        if memory is None or memory.runtime is not runtime:  # an id reused by a new runtime
            memory = HybridMemory(runtime, textlog=textlog)
            _MEMORIES[key] = memory
        return memory
