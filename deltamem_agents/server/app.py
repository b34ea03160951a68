"""`create_app`: the OpenAI-compatible δ-mem server as a FastAPI app.

Everything an app needs lives on ``app.state`` (no module globals), so tests and embedders can
run several apps side by side, each with its own runtime::

    from deltamem_agents.server import ServerSettings, create_app
    app = create_app(ServerSettings(state_only=True))          # loads the embedded backbone
    app = create_app(settings, runtime=my_runtime)             # or shares a loaded one
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from deltamem_agents._version import __version__
from deltamem_agents.server import errors
from deltamem_agents.server.auth import Authenticator
from deltamem_agents.server.build import build_memory
from deltamem_agents.server.context import ServerContext
from deltamem_agents.server.limits import BodySizeLimit
from deltamem_agents.server.routes import archive_router, chat_router, memories_router, service_router, sessions_router
from deltamem_agents.server.routes.archive import SESSIONS_HEADER, SHA256_HEADER
from deltamem_agents.server.scheduler import TurnScheduler
from deltamem_agents.server.settings import ServerSettings

if TYPE_CHECKING:
    from deltamem_agents.memory.hybrid import HybridMemory
    from deltamem_agents.runtime import DeltaMemRuntime

#: Request headers a browser may send cross-origin: an import may carry the archive's sha256.
CORS_ALLOW_HEADERS = ["Authorization", "Content-Type", "X-Session-Id", SHA256_HEADER]
#: Response headers a browser lets page scripts read: without them a cross-origin export's
#: checksum, session count and file name would be hidden from the page that downloaded it.
CORS_EXPOSE_HEADERS = ["X-Session-Id", SHA256_HEADER, SESSIONS_HEADER, "Content-Disposition"]


def create_app(
    settings: ServerSettings | None = None,
    runtime: DeltaMemRuntime | None = None,
    *,
    memory: HybridMemory | None = None,
) -> FastAPI:
    """The server for ``settings``. ``runtime`` shares an already loaded model (its session
    store is the sessions' store); ``memory`` gives the whole `HybridMemory` (runtime, text log
    and router) instead. Without either, both are built from the settings."""
    settings = settings or ServerSettings()
    if memory is None:
        memory = build_memory(settings, runtime)
    elif runtime is not None and runtime is not memory.runtime:
        raise ValueError("give a runtime or a memory built on it, not two different runtimes")
    scheduler = TurnScheduler(
        memory,
        batching=settings.batching,
        batch_wait_s=settings.batch_wait_ms / 1e3,
        max_batch_rows=settings.max_batch_rows,
        max_workers=settings.max_workers,
        max_queued_turns=settings.max_queued_turns,
        lock_timeout_s=settings.lock_timeout_s,
        max_ingest_chars=settings.max_ingest_chars,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        scheduler.close()

    app = FastAPI(
        title="deltamem",
        summary="OpenAI-compatible chat with δ-mem memory per session",
        version=__version__,
        lifespan=lifespan,
    )
    authenticator = Authenticator(settings.api_keys, settings.anonymous_user)
    fingerprint = hashlib.sha256(memory.runtime.fingerprint.model_dump_json().encode()).hexdigest()[:12]
    app.state.authenticator = authenticator
    app.state.context = ServerContext(
        settings=settings, memory=memory, scheduler=scheduler, authenticator=authenticator,
        fingerprint=f"dm-{fingerprint}", started=int(time.time()),
    )
    errors.install(app)
    app.include_router(service_router)
    app.include_router(chat_router)
    app.include_router(sessions_router)
    app.include_router(archive_router)  # before memories: /v1/memories/export is not a memory id
    app.include_router(memories_router)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=CORS_ALLOW_HEADERS, expose_headers=CORS_EXPOSE_HEADERS,
        )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    return app


def close_app(app: FastAPI) -> None:
    """Stop an app's worker threads; for apps run without a lifespan (e.g. through httpx's
    ``ASGITransport``). Served apps close themselves at shutdown."""
    app.state.context.scheduler.close()


__all__ = ["close_app", "create_app"]
