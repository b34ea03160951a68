"""The parts of the official MCP Python SDK the server uses, for either major version installed.

SDK 2.x renamed 1.x's `mcp.server.fastmcp.FastMCP` to `mcp.server.mcpserver.MCPServer`, moved its
exceptions along, and takes the streamable-HTTP address when the server runs rather than when it
is built. Everything else in `deltamem_agents.mcp_server` and `deltamem mcp` imports the SDK
through this module only, so the differences live here. It imports the SDK when it is imported:
reach it through `require_mcp`, which names the extra to install when the SDK is absent.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from typing import Any

import mcp.server  # noqa: F401 - without the SDK, ImportError here (`require_mcp` adds the install hint)
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ToolAnnotations

if find_spec("mcp.server.mcpserver") is not None:  # 2.x; a broken install raises its own error here
    from mcp.server.mcpserver import MCPServer as Server
    from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError

    MAJOR = 2
else:  # 1.x
    from mcp.server.fastmcp import FastMCP as Server  # type: ignore[assignment,no-redef]
    from mcp.server.fastmcp.exceptions import ResourceError, ToolError  # type: ignore[assignment,no-redef]

    ResourceNotFoundError = ResourceError  # type: ignore[misc]  # 1.x has one resource error
    MAJOR = 1

try:
    VERSION = version("mcp")
except PackageNotFoundError:  # pragma: no cover - importable without metadata (a source checkout)
    VERSION = "unknown"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def new_server(name: str, *, instructions: str, log_level: str = "INFO") -> Server:
    """A server with no transport settings: `serve_streamable_http` passes the address."""
    return Server(name, instructions=instructions, log_level=log_level)


def tool_annotations(
    title: str, *, read_only: bool, destructive: bool | None = None, idempotent: bool | None = None,
) -> ToolAnnotations:
    """Built from the wire names, which both majors accept (2.x's attributes are snake_case)."""
    wire = {"title": title, "readOnlyHint": read_only, "destructiveHint": destructive, "idempotentHint": idempotent}
    return ToolAnnotations.model_validate({k: v for k, v in wire.items() if v is not None})


def transport_security(host: str) -> TransportSecuritySettings:
    """Host/Origin checks (DNS-rebinding protection) on loopback, none on a remote ``host`` (it sits
    behind a proxy). The SDK picks the same by itself, but 1.x picks it when the server is built."""
    if host in LOOPBACK:
        return TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
            allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
        )
    return TransportSecuritySettings(enable_dns_rebinding_protection=False)


async def serve_stdio(server: Server) -> None:
    """The SDK's own stdio transport, on whatever ``sys.stdin``/``sys.stdout`` are."""
    await server.run_stdio_async()


async def serve_streamable_http(server: Server, *, host: str, port: int, path: str) -> None:
    """Streamable HTTP on ``host:port`` at ``path``, until cancelled."""
    security = transport_security(host)
    if MAJOR >= 2:
        await server.run_streamable_http_async(
            host=host, port=port, streamable_http_path=path, transport_security=security,
        )
        return
    settings: Any = server.settings  # 1.x reads the address from its (public, mutable) settings
    settings.host, settings.port, settings.streamable_http_path = host, port, path
    settings.transport_security = security
    await server.run_streamable_http_async()


__all__ = [
    "LOOPBACK", "MAJOR", "VERSION", "ResourceError", "ResourceNotFoundError", "Server", "ToolAnnotations", "ToolError",
    "new_server", "serve_stdio", "serve_streamable_http", "tool_annotations", "transport_security",
]
