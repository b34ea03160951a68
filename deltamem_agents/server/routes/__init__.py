"""The server's routes, one module per group: chat completions, sessions, memories (and their
archive: export and import), service."""

from deltamem_agents.server.routes.archive import router as archive_router
from deltamem_agents.server.routes.chat import router as chat_router
from deltamem_agents.server.routes.memories import router as memories_router
from deltamem_agents.server.routes.service import router as service_router
from deltamem_agents.server.routes.sessions import router as sessions_router

__all__ = ["archive_router", "chat_router", "memories_router", "service_router", "sessions_router"]
