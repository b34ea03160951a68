"""`deltamem mcp` argument checks (before any model loads) and the missing-SDK hint."""

from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

from deltamem_agents.cli import app
from deltamem_agents.mcp_server import INSTALL_HINT, require_mcp

runner = CliRunner()


def test_the_command_is_registered():
    result = runner.invoke(app, ["mcp", "--help"])
    assert result.exit_code == 0
    assert "--transport" in result.output and "streamable-http" in result.output


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
    monkeypatch.setitem(sys.modules, "mcp.server.fastmcp", None)  # what an absent package looks like to import
    with pytest.raises(ImportError, match="pip install 'deltamem-agents\\[mcp\\]'"):
        require_mcp()
    result = runner.invoke(app, ["mcp"])
    assert result.exit_code == 2 and INSTALL_HINT in " ".join(result.output.split())
