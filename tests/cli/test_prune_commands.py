"""`deltamem sessions retention` (no model) and `deltamem sessions prune` (the real backbone:
expired entries leave the log and the session's state is rebuilt from what remains). Retention
works on the text log's entries: what `deltamem ingest` wrote into a state alone is not logged."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from deltamem_agents.cli import app
from deltamem_agents.session import DirectorySessionStore, SessionKey

runner = CliRunner()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DELTAMEM_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_retention_is_shown_set_and_cleared_without_a_model(home):
    shown = invoke("sessions", "retention", "--user", "ada")
    assert shown.exit_code == 0 and "none (entries are kept until deleted)" in shown.output
    set_ = invoke("sessions", "retention", "--user", "ada", "--max-age", "30d", "--max-entries", "50")
    assert set_.exit_code == 0, set_.output
    assert '"max_age":2592000.0' in set_.output and '"max_entries":50' in set_.output
    assert "2592000.0" in invoke("sessions", "retention", "--user", "ada").output  # kept beside the log
    assert "none" in invoke("sessions", "retention", "--user", "bob").output
    bad = invoke("sessions", "retention", "--user", "ada", "--max-age", "-2d")
    assert bad.exit_code != 0 and "max_age must be a positive duration" in bad.output
    both = invoke("sessions", "retention", "--user", "ada", "--clear", "--max-entries", "3")
    assert both.exit_code != 0 and "--clear cannot be combined" in both.output
    assert "2592000.0" in invoke("sessions", "retention", "--user", "ada").output  # the refusals changed nothing
    assert "none" in invoke("sessions", "retention", "--user", "ada", "--clear").output


@pytest.mark.smollm2
def test_prune_removes_what_the_policy_expires_and_rebuilds_the_state(home, tmp_path):
    from deltamem_agents.cli._runtime import build_hybrid, build_runtime

    memory = build_hybrid(build_runtime(home=None, adapter="none", quiet=True))  # what a chat or `add` leaves: log entries + state
    memory.add("My ferret is Quillon.", session_id="s1", user_id="ada")
    memory.add("I live in Ljubljana.", session_id="s1", user_id="ada")
    memory.textlog.close()
    store = DirectorySessionStore(home / "sessions") if (home / "sessions").exists() else None
    assert invoke("sessions", "retention", "--user", "ada", "--max-entries", "1").exit_code == 0
    dry = invoke("sessions", "prune", "--user", "ada", "--dry-run", "--json", "--adapter", "none")
    assert dry.exit_code == 0, dry.output
    report = json.loads(dry.output[dry.output.index("{"):])
    assert report["dry_run"] and [e["reason"] for e in report["entries"]] == ["max_entries"]
    pruned = invoke("sessions", "prune", "--adapter", "none")
    assert pruned.exit_code == 0, pruned.output
    assert "removed 1 expired memories" in pruned.output and "1 session state(s) rebuilt" in pruned.output
    again = invoke("sessions", "prune", "--adapter", "none")
    assert "removed 0 expired memories" in again.output
    shown = invoke("sessions", "show", "s1", "--user", "ada")
    assert "Ljubljana" in shown.output and "Quillon" not in shown.output, shown.output
    if store is not None:
        assert store.head(SessionKey(user_id="ada", session_id="s1")).message_count == 1
