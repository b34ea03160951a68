"""`ServerContext`: what one app instance holds (on ``app.state.context``, never in globals)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from deltamem_agents.memory.hybrid import HybridMemory
from deltamem_agents.server.auth import Authenticator
from deltamem_agents.server.scheduler import TurnScheduler
from deltamem_agents.server.settings import ServerSettings
from deltamem_agents.store.base import SessionStore


@dataclass(frozen=True)
class ServerContext:
    settings: ServerSettings
    memory: HybridMemory
    scheduler: TurnScheduler
    authenticator: Authenticator
    fingerprint: str
    started: int

    @property
    def store(self) -> SessionStore:
        return self.memory.runtime.store


def context(request: Request) -> ServerContext:
    """FastAPI dependency: this app's context."""
    return request.app.state.context


__all__ = ["ServerContext", "context"]
