"""The official SDK's client, 1.x or 2.x, behind one small face for the tests.

1.x hands out a `ClientSession` per transport and names result fields in camelCase; 2.x has
`mcp.client.Client` and snake_case fields. Results come back here in their wire form (plain dicts
with the protocol's camelCase names), which both majors share, so a test reads the protocol, not
one SDK's attribute spelling.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from importlib.metadata import version
from typing import Any, TextIO

from mcp.client.stdio import StdioServerParameters, stdio_client

MCP_VERSION = version("mcp")
MCP_MAJOR = int(MCP_VERSION.split(".")[0])

if MCP_MAJOR >= 2:
    from mcp.shared.exceptions import MCPError as McpError
else:
    from mcp.shared.exceptions import McpError

__all__ = ["MCP_MAJOR", "MCP_VERSION", "Connection", "McpError", "in_process", "over_http", "over_stdio", "wire"]


def wire(model: Any) -> dict[str, Any]:
    """A result as it travels: camelCase keys, nothing that was left unset."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


class Connection:
    """An initialized client of either major; every method returns the wire form."""

    def __init__(self, client: Any, instructions: str | None) -> None:
        self._client = client
        self.instructions = instructions

    async def list_tools(self) -> list[dict[str, Any]]:
        return wire(await self._client.list_tools())["tools"]

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        return wire(await self._client.call_tool(name, arguments))

    async def read_resource(self, uri: str) -> dict[str, Any]:
        return wire(await self._client.read_resource(uri))

    async def list_resource_templates(self) -> list[dict[str, Any]]:
        return wire(await self._client.list_resource_templates())["resourceTemplates"]


@asynccontextmanager
async def _v1_session(read: Any, write: Any) -> AsyncIterator[Connection]:
    from mcp import ClientSession

    async with ClientSession(read, write) as session:
        info = await session.initialize()
        yield Connection(session, info.instructions)


@asynccontextmanager
async def _v2_client(target: Any, **options: Any) -> AsyncIterator[Connection]:
    from mcp.client import Client

    async with Client(target, **options) as client:
        yield Connection(client, client.instructions)


@asynccontextmanager
async def in_process(server: Any) -> AsyncIterator[Connection]:
    """The server in this process: 2.x's `Client(server)` (its default, modern protocol), or 1.x's
    in-memory streams."""
    if MCP_MAJOR >= 2:
        async with _v2_client(server) as connection:
            yield connection
        return
    from mcp.shared.memory import create_connected_server_and_client_session

    async with create_connected_server_and_client_session(server) as session:
        info = await session.initialize()  # again: the helper does not hand out its result
        yield Connection(session, info.instructions)


@asynccontextmanager
async def over_stdio(params: StdioServerParameters, errlog: TextIO) -> AsyncIterator[Connection]:
    """Starts ``params`` as a child process and speaks to it over its stdin/stdout."""
    async with AsyncExitStack() as stack:
        transport = stdio_client(params, errlog=errlog)
        if MCP_MAJOR >= 2:
            connection = await stack.enter_async_context(_v2_client(transport))
        else:
            read, write = await stack.enter_async_context(transport)
            connection = await stack.enter_async_context(_v1_session(read, write))
        yield connection


@asynccontextmanager
async def over_http(url: str) -> AsyncIterator[Connection]:
    """Streamable HTTP; on 2.x with the initialize handshake that clients older than the
    2026 protocol use, so both the handshake and (over stdio) the modern path are exercised."""
    if MCP_MAJOR >= 2:
        async with _v2_client(url, mode="legacy") as connection:
            yield connection
        return
    from mcp.client.streamable_http import streamable_http_client

    async with streamable_http_client(url) as (read, write, _), _v1_session(read, write) as connection:
        yield connection
