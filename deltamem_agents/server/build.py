"""What `ServerSettings` name, built: the runtime (backbone + δ-mem + session store), the text
log and the router, put together as the server's one `HybridMemory`."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deltamem_agents.server.settings import ServerSettings

if TYPE_CHECKING:
    from deltamem_agents.memory import HybridMemory, MemoryRouter, TextLog
    from deltamem_agents.runtime import DeltaMemRuntime


def load_runtime(settings: ServerSettings) -> DeltaMemRuntime:
    """Load the backbone and adapter once, with the session store ``settings.store`` or
    ``settings.home`` names (else ``$DELTAMEM_STORE``, else the default folder).

    The store waits ``lock_timeout_s`` for a session held by another process, then the turn
    fails with 503 instead of hanging; with Redis, a dead server's locks expire after
    ``lock_lease_s``. At most ``warm_sessions_mb`` of sessions stay warm between turns (a runtime
    given to `build_memory` or `create_app` keeps its own bound: `DeltaMemRuntime.set_warm_budget`)."""
    from deltamem_agents.runtime import DeltaMemRuntime, UntrainedMemoryWarning
    from deltamem_agents.session import SessionConfig
    from deltamem_agents.store.url import store_from_env

    session_fields: dict[str, Any] = {"context_window": settings.context_window, "system_prompt": settings.system_prompt}
    session_fields = {name: value for name, value in session_fields.items() if value is not None}
    adapter: str | Path | None = settings.adapter
    if settings.adapter.lower() == "none":
        adapter = None
    elif settings.adapter != "auto":
        adapter = Path(settings.adapter).expanduser()
        if not adapter.exists():
            raise FileNotFoundError(f"adapter {settings.adapter!r} does not exist (give an adapter folder, 'auto' or 'none')")
    with warnings.catch_warnings():
        # Said once in the log by `deltamem serve`; a server has no user to show a warning to.
        warnings.simplefilter("ignore", UntrainedMemoryWarning)
        return DeltaMemRuntime(
            settings.backbone, adapter=adapter,
            store=store_from_env(
                settings.store if settings.store is not None else settings.home,
                lock_timeout=settings.lock_timeout_s, lease_ttl=settings.lock_lease_s,
            ),
            session_config=SessionConfig(**session_fields) if session_fields else None,
            device=settings.device, dtype=settings.dtype, progress=False,
            warm_budget_bytes=settings.warm_sessions_mb * 2**20,
        )


def open_textlog(settings: ServerSettings) -> TextLog | None:
    """The text log the settings name (None with ``state_only``)."""
    if settings.state_only:
        return None
    from deltamem_agents.memory import TextLog, TextLogConfig

    fields: dict[str, Any] = {}
    if settings.textlog is not None:
        fields["path"] = settings.textlog
    if settings.chroma_url is not None:
        fields["server_url"] = settings.chroma_url
    return TextLog(TextLogConfig(**fields))


def open_router(settings: ServerSettings) -> MemoryRouter:
    from deltamem_agents.memory import MemoryRouter, router_from_spec

    spec = settings.router
    if spec is None:
        return MemoryRouter()
    if spec.endswith(".json") or Path(spec).expanduser().is_file():
        return MemoryRouter.from_calibration(spec)
    return router_from_spec(spec)


def build_memory(settings: ServerSettings, runtime: DeltaMemRuntime | None = None) -> HybridMemory:
    """The server's `HybridMemory`: ``runtime`` (or one loaded from the settings), log and router."""
    from deltamem_agents.memory import HybridMemory

    return HybridMemory(runtime or load_runtime(settings), open_textlog(settings), open_router(settings))


__all__ = ["build_memory", "load_runtime", "open_router", "open_textlog"]
