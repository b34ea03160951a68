"""`deltamem mcp` argument checks (before any model loads), the missing-SDK hint, and which SDK
major `deltamem_agents.mcp_server.sdk` picked."""

from __future__ import annotations

import re
import sys
from importlib.metadata import version

import pytest
from typer.testing import CliRunner

from deltamem_agents.cli import app
from deltamem_agents.mcp_server import INSTALL_HINT, build_mcp_server, require_mcp

runner = CliRunner()


def test_the_command_is_registered():
    result = runner.invoke(app, ["mcp", "--help"])
    assert result.exit_code == 0
    assert "--transport" in result.output and "streamable-http" in result.output


def help_tools() -> list[str]:
    """The tool names the ``Tools: a, b, c.`` paragraph of ``deltamem mcp --help`` gives."""
    result = runner.invoke(app, ["mcp", "--help"])
    assert result.exit_code == 0
    match = re.search(r"Tools:([^.]*)\.", " ".join(result.output.split()))
    assert match, result.output
    return [name.strip() for name in match.group(1).split(",")]


@pytest.mark.anyio
async def test_the_help_names_exactly_the_tools_the_server_registers(hybrid):
    from tests.mcp.sdk_client import in_process

    async with in_process(build_mcp_server(hybrid, max_new_tokens=4)) as client:
        registered = [t["name"] for t in await client.list_tools()]
    named = help_tools()
    assert len(named) == len(set(named)), named
    assert set(named) == set(registered), (set(named) - set(registered), set(registered) - set(named))


def test_a_remote_host_needs_allow_remote(monkeypatch):
    import deltamem_agents.cli.mcp as command

    monkeypatch.setattr(command, "build_runtime", lambda **_: pytest.fail("the model must not load"))
    result = runner.invoke(app, ["mcp", "--transport", "streamable-http", "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "--allow-remote" in result.output and "no authentication" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--path", "mcp"], "--path must start with '/'"),
    (["--log-level", "LOUD"], "--log-level must be"),
])
def test_bad_options_fail_in_one_line(monkeypatch, args, message):
    import deltamem_agents.cli.mcp as command

    monkeypatch.setattr(command, "build_runtime", lambda **_: pytest.fail("the model must not load"))
    result = runner.invoke(app, ["mcp", "--transport", "streamable-http", *args])
    assert result.exit_code == 2 and message in result.output


def test_a_missing_sdk_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mcp", None)  # what an absent package looks like to import
    monkeypatch.delitem(sys.modules, "deltamem_agents.mcp_server.sdk", raising=False)  # so it is imported afresh
    with pytest.raises(ImportError, match="pip install 'deltamem-agents\\[mcp\\]'"):
        require_mcp()
    result = runner.invoke(app, ["mcp"])
    assert result.exit_code == 2 and INSTALL_HINT in " ".join(result.output.split())


def test_the_installed_major_is_the_one_used():
    from deltamem_agents.mcp_server import sdk

    installed = version("mcp")
    assert sdk.VERSION == installed and sdk.MAJOR == int(installed.split(".")[0])
    assert sdk.Server.__name__ == ("MCPServer" if sdk.MAJOR >= 2 else "FastMCP")
    assert issubclass(sdk.ResourceNotFoundError, sdk.ResourceError)


def test_dns_rebinding_protection_on_loopback_only():
    from deltamem_agents.mcp_server import sdk

    for host in sdk.LOOPBACK:
        assert sdk.transport_security(host).enable_dns_rebinding_protection is True
    assert sdk.transport_security("0.0.0.0").enable_dns_rebinding_protection is False
