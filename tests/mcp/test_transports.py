"""`deltamem mcp` as a real process, driven by the SDK's own clients (either major, through
`sdk_client`): stdio and streamable HTTP.

The command is pointed at a tiny random model saved to a folder (with the SmolLM2 tokenizer), so
a process starts in seconds; the text log is the real embedded Chroma with the shipped MiniLM."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from mcp.client.stdio import StdioServerParameters

from tests.mcp.sdk_client import Connection, over_http, over_stdio
from tests.mcp.test_tools import TOOLS
from tests.tiny_models import tiny_model

pytestmark = pytest.mark.anyio


@pytest.fixture
def tiny_backbone(chat_tokenizer, tmp_path) -> Path:
    folder = tmp_path / "tiny-backbone"
    tiny_model("llama", vocab_size=len(chat_tokenizer), max_position_embeddings=4096).save_pretrained(folder)
    chat_tokenizer.save_pretrained(folder)
    return folder


def command(backbone: Path, home: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "deltamem_agents.cli", "mcp", "--backbone", str(backbone), "--adapter", "none",
        "--device", "cpu", "--home", str(home / "sessions"), "--textlog", str(home / "textlog"), "--max-new-tokens", "3",
        *extra,
    ]


def environment(home: Path) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DELTAMEM_HOME": str(home)}


async def exercise(client: Connection) -> None:
    """The same short conversation over any transport."""
    assert "remember" in (client.instructions or "")
    tools = {t["name"] for t in await client.list_tools()}
    assert tools == TOOLS
    remembered = await client.call_tool("remember", {"text": "My locker code is 7312.", "user_id": "ada", "session_id": "gym"})
    assert not remembered.get("isError") and remembered["structuredContent"]["log_entry_ids"]
    recalled = await client.call_tool("recall", {"query": "What is my locker code?", "user_id": "ada", "session_id": "gym"})
    assert not recalled.get("isError"), recalled["content"][0]["text"]
    out = recalled["structuredContent"]
    assert out["wrote"] is False and out["decision"]["route"] in ("state", "retrieve", "both")
    assert 1 <= out["completion_tokens"] <= 3
    listed = await client.call_tool("list_sessions", {})
    assert [(s["user_id"], s["session_id"], s["turns"]) for s in listed["structuredContent"]["sessions"]] == [("ada", "gym", 1)]
    log = await client.read_resource("deltamem://sessions/ada/gym/log")
    assert [m["content"] for m in json.loads(log["contents"][0]["text"])["messages"]] == ["My locker code is 7312."]
    missing = await client.call_tool("session_stats", {"user_id": "ada", "session_id": "nope"})
    assert missing.get("isError") is True and "no session ada/nope" in missing["content"][0]["text"]


async def test_stdio_with_the_sdk_client(tiny_backbone, tmp_path):
    errors = tmp_path / "stderr.txt"
    params = StdioServerParameters(
        command=sys.executable, args=command(tiny_backbone, tmp_path)[1:], env=environment(tmp_path), cwd=tmp_path,
    )
    with errors.open("w") as errlog:
        async with over_stdio(params, errlog) as client:
            await exercise(client)
    log = errors.read_text()
    assert "deltamem MCP server on stdio" in log  # the start-up line went to stderr, not into the protocol
    assert (tmp_path / "sessions" / "ada" / "gym").is_dir() and (tmp_path / "textlog").is_dir()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def http_server(tiny_backbone, tmp_path):
    """`deltamem mcp --transport streamable-http` on a free port; yields its URL once it answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    stderr = tmp_path / "stderr.txt"
    with stderr.open("w") as errors:
        process = subprocess.Popen(
            command(tiny_backbone, tmp_path, "--transport", "streamable-http", "--port", str(port)),
            env=environment(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE, stderr=errors,
        )
        try:
            deadline = time.monotonic() + 240
            while True:
                assert process.poll() is None, stderr.read_text()[-3000:]
                try:
                    httpx.get(url, timeout=1)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the server did not start"
                    time.sleep(0.5)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=30)
    assert f"deltamem MCP server on {url}" in stderr.read_text()


async def test_streamable_http_with_the_sdk_client(http_server):
    async with over_http(http_server) as client:
        await exercise(client)
    # DNS-rebinding protection on loopback (set by `sdk.transport_security` for either major)
    foreign = httpx.post(
        http_server, content=b"{}", timeout=10,
        headers={"Host": "evil.example", "Content-Type": "application/json", "Accept": "application/json, text/event-stream"},
    )
    assert foreign.status_code == 421, foreign.text


def test_stdout_is_the_protocols_alone(tmp_path):
    """Inside `protocol_stdout`, prints (Python's and C's) go to stderr; only the handle reaches stdout."""
    script = (
        "import os\n"
        "from deltamem_agents.cli.mcp import protocol_stdout\n"
        "with protocol_stdout() as out:\n"
        "    print('python noise')\n"
        "    os.write(1, b'fd noise\\n')\n"
        "    out.write(b'protocol\\n')\n"
        "    out.close()  # the transport closes its stream when it ends\n"
        "print('after')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert done.returncode == 0, done.stderr
    assert done.stdout == "protocol\nafter\n"
    assert "python noise" in done.stderr and "fd noise" in done.stderr


NOISY_SERVER = """\
import os
import sys

import anyio

from deltamem_agents.cli.mcp import protocol_stdout, run_stdio
from deltamem_agents.mcp_server import sdk

with protocol_stdout() as out:
    print("loading noise")
    server = sdk.new_server("noisy", instructions="prints while it serves")

    @server.tool(name="noisy")
    def noisy() -> str:
        print("python noise")
        sys.stdout.flush()
        os.write(1, b"fd noise\\n")
        return "quiet"

    anyio.run(run_stdio, server, out)
"""


async def test_prints_while_serving_miss_the_protocol(tmp_path):
    """`run_stdio` serves through the SDK's public `run_stdio_async` on either major: a tool that
    prints (Python's print, a write to fd 1) leaves the protocol intact and the noise on stderr."""
    errors = tmp_path / "stderr.txt"
    params = StdioServerParameters(
        command=sys.executable, args=["-c", NOISY_SERVER], cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    with errors.open("w") as errlog:
        async with over_stdio(params, errlog) as client:
            assert client.instructions == "prints while it serves"
            for _ in range(2):
                result = await client.call_tool("noisy", {})
                assert not result.get("isError") and result["content"][0]["text"] == "quiet"
    log = errors.read_text()
    assert log.count("python noise") == 2 and log.count("fd noise") == 2 and "loading noise" in log
