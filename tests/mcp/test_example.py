"""Smoke test of examples/05_mcp_tools.py: its own process, offline, on the embedded backbone,
starting `deltamem mcp` over stdio through langchain-mcp-adapters, with its data in a temporary
DELTAMEM_HOME."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.mcp.sdk_client import MCP_MAJOR, MCP_VERSION
from tests.mcp.test_tools import TOOLS

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "05_mcp_tools.py"

pytestmark = [
    pytest.mark.smollm2,
    pytest.mark.skipif(MCP_MAJOR >= 2, reason=f"langchain-mcp-adapters pins mcp<2; this environment has mcp {MCP_VERSION}"),
]


def test_05_mcp_tools(tmp_path):
    pytest.importorskip("langchain_mcp_adapters", reason="the example needs langchain-mcp-adapters (the dev extra)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DELTAMEM_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, str(EXAMPLE)], check=False, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    out = done.stdout
    assert f"{len(TOOLS)} MCP tools loaded as LangChain tools:" in out
    for tool in sorted(TOOLS):
        assert f"  {tool}(" in out
    assert "'My gym locker code is 7312.': " in out and "tokens into the δ-mem state" in out
    # the probe: routed (the log holds the code, so retrieval is wanted), answered, nothing written
    assert "snippet " in out and ": 'My gym locker code is 7312.'" in out
    assert out.count("model reply (wrote=False): ") == 2
    assert "-> unchanged" in out and "fixed size" in out
    assert '"role": "user"' in out  # the log resource
    assert "forgot 1 message(s) and 1 log entries; the δ-mem state cannot unlearn, so it was rebuilt" in out
    assert "the log still returns the code: False" in out
    assert "no session ada/no-such-session" in out
    assert "tool calls: 9; message history: 9 AIMessage with tool calls, 9 ToolMessage" in out
    assert "deltamem MCP server on stdio" in done.stderr  # the server's start-up line, on stderr
    assert (tmp_path / "sessions" / "ada" / "mcp-demo").is_dir() and (tmp_path / "textlog").is_dir()
