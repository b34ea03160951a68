"""Process-wide sharing of the heavy objects behind the LangChain classes.

LangChain code creates model objects freely (one per chain, one per test, one per `bind`), and
retrievers and histories next to them. None of them may load the backbone or open the Chroma
store again: the runtime comes from `DeltaMemRuntime.shared`, and text logs and `HybridMemory`
objects are shared here, one per folder and runtime.
"""

from __future__ import annotations

import threading
from pathlib import Path

from deltamem_agents.memory import TextLog, TextLogConfig, default_textlog_path
from deltamem_agents.memory.hybrid import HybridMemory
from deltamem_agents.runtime import DeltaMemRuntime
from deltamem_agents.session import default_store_root

_GUARD = threading.Lock()
_TEXTLOGS: dict[str, TextLog] = {}
_MEMORIES: dict[tuple[int, str | None], HybridMemory] = {}


def resolve_folder(path: str | Path | None, default: Path) -> str:
    """An absolute folder, with ``DELTAMEM_HOME`` read now (not when the process started)."""
    return str(Path(path).expanduser().resolve() if path is not None else default.expanduser().resolve())


def shared_textlog(path: str | Path | None = None) -> TextLog:
    """The text log in ``path`` (default: ``$DELTAMEM_HOME/textlog``), opened once per process."""
    folder = resolve_folder(path, default_textlog_path())
    with _GUARD:
        log = _TEXTLOGS.get(folder)
        if log is None:
            log = TextLog(TextLogConfig(path=Path(folder)))
            _TEXTLOGS[folder] = log
        return log


def shared_runtime(
    backbone: str | None, *, adapter: str | None, store: str | Path | None, device: str | None, dtype: str | None
) -> DeltaMemRuntime:
    """`DeltaMemRuntime.shared` with the store folder resolved now, so a changed
    ``DELTAMEM_HOME`` gives another store instead of the first one the process saw."""
    root = resolve_folder(store, default_store_root())
    return DeltaMemRuntime.shared(backbone, adapter=adapter, store=root, device=device, dtype=dtype)


def shared_memory(runtime: DeltaMemRuntime, textlog_path: str | Path | None, *, hybrid: bool) -> HybridMemory:
    """One `HybridMemory` per runtime and text log (``hybrid=False``: state only)."""
    folder = resolve_folder(textlog_path, default_textlog_path()) if hybrid else None
    key = (id(runtime), folder)
    with _GUARD:
        memory = _MEMORIES.get(key)
        if memory is not None and memory.runtime is runtime:
            return memory
    textlog = shared_textlog(folder) if folder is not None else None
    with _GUARD:
        memory = _MEMORIES.get(key)
        if memory is None or memory.runtime is not runtime:
            memory = HybridMemory(runtime, textlog=textlog)
            _MEMORIES[key] = memory
        return memory
