"""`deltamem serve`: an OpenAI-compatible HTTP server with δ-mem memory per session.

`create_app(settings, runtime=None)` builds the FastAPI app; `ServerSettings` holds every
option (the command-line flags are derived from it). See docs/server.md.

Importing this package is cheap (the CLI reads `ServerSettings` to build its flags); FastAPI,
torch and the model code are imported on first use of `create_app`.
"""

from typing import Any

from deltamem_agents.server.settings import ServerSettings

_LAZY = {"create_app": "deltamem_agents.server.app", "close_app": "deltamem_agents.server.app"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ServerSettings", "close_app", "create_app"]
