"""`deltamem mcp`: serve the memory over the Model Context Protocol (stdio or streamable HTTP).

The model, the session store, the text log and the router are built by the same helpers as
`deltamem chat --hybrid` (`build_runtime`, `build_hybrid`). On stdio, stdout belongs to the
protocol: before anything loads, file descriptor 1 is pointed at stderr (so a library that prints
cannot corrupt the stream) and the protocol gets a private copy of the real stdout. The SDK (1.x or
2.x) is reached through `deltamem_agents.mcp_server.sdk`.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import sys
from collections.abc import Iterator
from enum import Enum
from typing import TYPE_CHECKING, Annotated, BinaryIO, TextIO

import typer

from deltamem_agents.cli._common import Device, err_console, fail, user_errors
from deltamem_agents.cli._runtime import (
    AdapterOpt,
    BackboneOpt,
    ChromaOpt,
    ContextOpt,
    DtypeOpt,
    HomeOpt,
    HybridOpt,
    RouterOpt,
    SystemOpt,
    TextLogOpt,
    build_hybrid,
    build_runtime,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from deltamem_agents.mcp_server.sdk import Server


#: The tools `build_mcp_server` registers, in its order, for the help text. The registry itself
#: exists only once a server is built (that needs a model and the optional SDK), too dear for
#: ``--help``; tests/mcp/test_cli.py compares this list with a built server's tools.
MCP_TOOLS: tuple[str, ...] = (
    "remember", "recall", "forget", "list_sessions", "session_stats",
    "add_memory", "get_memory", "list_memories", "search_memories", "update_memory", "delete_memory",
    "memory_history", "reset_memories",
)


class Transport(str, Enum):
    stdio = "stdio"
    streamable_http = "streamable-http"


@contextlib.contextmanager
def protocol_stdout() -> Iterator[BinaryIO]:
    """A private handle on the real stdout for the protocol; meanwhile fd 1 and ``sys.stdout``
    go to stderr, so stray prints (ours, a library's, C code's) never reach the client."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    previous = sys.stdout
    sys.stdout = sys.stderr
    # a copy of its own: the transport may close its stream when it ends, ``saved`` restores fd 1
    stream = os.fdopen(os.dup(saved), "wb")
    try:
        yield stream
    finally:
        sys.stdout = previous
        os.dup2(saved, 1)
        os.close(saved)
        with contextlib.suppress(OSError):
            stream.close()


class ProtocolStdout(io.TextIOBase):
    """``sys.stdout`` while the SDK serves stdio: text written to it goes to stderr, like the
    rest of the noise, and only its ``buffer`` is the protocol's handle. Both SDK majors build
    their stdout from ``sys.stdout.buffer`` (2.x sees it is not fd 1 and serves it in place)."""

    def __init__(self, protocol: BinaryIO, noise: TextIO) -> None:
        super().__init__()
        self._protocol = protocol
        self._noise = noise

    @property
    def buffer(self) -> BinaryIO:
        return self._protocol

    @property
    def encoding(self) -> str:
        return "utf-8"

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        return self._noise.write(text)

    def flush(self) -> None:
        self._noise.flush()

    def fileno(self) -> int:
        return self._noise.fileno()

    def isatty(self) -> bool:
        return False


async def run_stdio(server: Server, out: BinaryIO) -> None:
    """The SDK's stdio transport (public API only), writing the protocol to ``out``."""
    from deltamem_agents.mcp_server import sdk

    previous = sys.stdout
    sys.stdout = ProtocolStdout(out, sys.stderr)
    try:
        await sdk.serve_stdio(server)
    finally:
        sys.stdout = previous


@user_errors
def mcp(
    transport: Annotated[Transport, typer.Option("--transport", help="stdio (an MCP client starts this command) or streamable-http")] = Transport.stdio,
    host: Annotated[str, typer.Option("--host", help="streamable-http: address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="streamable-http: port")] = 8000,
    path: Annotated[str, typer.Option("--path", help="streamable-http: the endpoint's path")] = "/mcp",
    allow_remote: Annotated[
        bool, typer.Option("--allow-remote", help="streamable-http: listen on a non-loopback --host (there is no authentication)")
    ] = False,
    home: HomeOpt = None,
    backbone: BackboneOpt = None,
    adapter: AdapterOpt = "auto",
    device: Device = None,
    dtype: DtypeOpt = None,
    context_window: ContextOpt = None,
    system_prompt: SystemOpt = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, max=1024, help="default reply length of recall")] = 128,
    hybrid: HybridOpt = True,
    textlog: TextLogOpt = None,
    chroma_url: ChromaOpt = None,
    router: RouterOpt = None,
    log_level: Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING, ERROR (on stderr)")] = "WARNING",
) -> None:
    # the help text is set below, from MCP_TOOLS
    from deltamem_agents.mcp_server import INSTALL_HINT

    try:
        from deltamem_agents.mcp_server import build_mcp_server, require_mcp

        require_mcp()
    except ImportError:
        raise fail(INSTALL_HINT) from None
    from deltamem_agents.mcp_server import sdk

    level = log_level.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise fail(f"--log-level must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {log_level!r}")
    if not path.startswith("/"):
        raise fail(f"--path must start with '/', got {path!r}")
    stdio = transport is Transport.stdio
    if not stdio and host not in sdk.LOOPBACK and not allow_remote:
        raise fail(
            f"--host {host} is reachable from other machines, and the MCP server has no authentication: anyone who "
            "reaches it can read and forget every session. Put it behind an authenticating proxy and pass --allow-remote"
        )
    with protocol_stdout() if stdio else contextlib.nullcontext() as out:
        runtime = build_runtime(
            home=home, backbone=backbone, adapter=adapter, device=device, dtype=dtype, context_window=context_window,
            system_prompt=system_prompt,
        )
        if hybrid:
            memory = build_hybrid(runtime, textlog=textlog, chroma_url=chroma_url, router=router)
        else:
            from deltamem_agents.memory.hybrid import HybridMemory

            memory = HybridMemory(runtime, None)
        server = build_mcp_server(memory, max_new_tokens=max_new_tokens, log_level=level)
        where = "stdio" if stdio else f"http://{host}:{port}{path}"
        err_console.print(
            f"deltamem MCP server on {where}: {runtime.backbone_name}, sessions in {runtime.store}, "
            f"text log {'off' if memory.textlog is None else 'on'}",
            markup=False, highlight=False, soft_wrap=True,
        )
        import anyio

        if stdio:
            assert out is not None
            anyio.run(run_stdio, server, out)
        else:
            anyio.run(functools.partial(sdk.serve_streamable_http, server, host=host, port=port, path=path))


mcp.__doc__ = (
    "Serve the memory as MCP tools, and each session's log as a resource.\n\n"
    f"Tools: {', '.join(MCP_TOOLS)}.\n\n"
    "See docs/mcp.md for a client configuration."
)

__all__ = ["MCP_TOOLS", "mcp"]
