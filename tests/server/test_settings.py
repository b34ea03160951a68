"""ServerSettings and the `deltamem serve` flags derived from it."""

from __future__ import annotations

import json
import re

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from deltamem_agents.cli import app as cli
from deltamem_agents.server.settings import (
    API_KEYS_ENV,
    ServerSettings,
    is_loopback,
    parse_api_keys,
)

KEY = "k" * 20


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_needs_no_keys(host):
    assert is_loopback(host)
    assert ServerSettings(host=host).auth_required is False


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::", "example.com"])
def test_any_other_address_needs_keys(host):
    assert not is_loopback(host)
    with pytest.raises(ValidationError, match="API keys are required"):
        ServerSettings(host=host)
    assert ServerSettings(host=host, api_keys={KEY: "ada"}).auth_required


def test_keys_come_from_a_file_or_the_environment(tmp_path):
    lines = tmp_path / "keys.txt"
    lines.write_text(f"# team keys\n{KEY} ada\n{'m' * 20}:bob\n")
    as_json = tmp_path / "keys.json"
    as_json.write_text(json.dumps({KEY: "ada"}))
    assert ServerSettings(api_keys_file=lines).api_keys == {KEY: "ada", "m" * 20: "bob"}
    assert ServerSettings(api_keys_file=as_json).api_keys == {KEY: "ada"}
    env = {API_KEYS_ENV: f"{KEY}:ada,{'n' * 20}:cy"}
    assert ServerSettings.with_env_keys(env, host="0.0.0.0").api_keys == {KEY: "ada", "n" * 20: "cy"}
    assert parse_api_keys("", source="x") == {}


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"api_keys": {"short": "ada"}}, "too short"),
        ({"api_keys": {KEY: "../root"}}, "invalid user_id"),
        ({"cors_origins": ["*"]}, "may not contain"),
        ({"default_max_tokens": 2000}, "larger than max_tokens"),
        ({"state_only": True, "chroma_url": "http://127.0.0.1:8000"}, "state_only"),
        ({"api_keys_file": "/nonexistent/keys"}, "cannot read"),
        ({"log_level": "loud"}, "log_level"),
        ({"max_request_bytes": 10}, "greater than or equal"),
    ],
)
def test_bad_settings_are_refused_with_the_fix(fields, message):
    with pytest.raises(ValidationError, match=message):
        ServerSettings(**fields)


def test_every_settings_field_is_a_serve_flag_except_the_keys():
    result = CliRunner().invoke(cli, ["serve", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in ServerSettings.model_fields:
        flag = "--" + name.replace("_", "-")
        shown = re.search(re.escape(flag) + r"(?![\w-])", result.output) is not None
        assert shown == (name != "api_keys"), flag


def test_serve_refuses_an_exposed_address_without_keys_before_loading_a_model(monkeypatch):
    monkeypatch.delenv(API_KEYS_ENV, raising=False)
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "API keys are required" in result.output and "Traceback" not in result.output
