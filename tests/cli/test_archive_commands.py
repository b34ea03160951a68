"""`deltamem export` and `deltamem import`, through typer's CliRunner.

Export and the refusals that come before the model (a damaged archive, an existing session)
load no model; the test marked ``smollm2`` imports with the real backbone: another model's
states refused, then replayed, then moved to a third store byte for byte.
"""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from deltamem_agents.cli import app
from deltamem_agents.core.state import DeltaMemState
from deltamem_agents.session import ChatMessage, DirectorySessionStore, Fingerprint, SessionKey

runner = CliRunner()
FINGERPRINT = Fingerprint(backbone="smollm2-135m-instruct", backbone_signature="test", adapter="none", config="test")


def invoke(*args: str):
    return runner.invoke(app, list(args))


def one_line_error(result, exit_code: int = 2) -> str:
    """The one error line (a ``note:`` line about the untrained adapter may come before it)."""
    assert result.exit_code == exit_code, result.output
    lines = [line for line in result.output.splitlines() if line.strip() and not line.startswith("note: ")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.fixture
def home(tmp_path):
    """ada/trip (two turns and a state) and ada/notes (no state), written with the store alone."""
    store = DirectorySessionStore(tmp_path / "home")
    record = store.create(SessionKey(user_id="ada", session_id="trip"), FINGERPRINT, extra={"title": "Lisbon"})
    state = DeltaMemState({i: torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(i)) for i in range(2)})
    record = store.commit(record, new_messages=[ChatMessage(role="user", content="I land in Lisbon on Friday."),
                                                ChatMessage(role="assistant", content="Noted.")], state=state, tokens_written=20)
    store.commit(record, new_messages=[ChatMessage(role="user", content="I am vegetarian.")], state=state, tokens_written=7)
    notes = store.create(SessionKey(user_id="ada", session_id="notes"), FINGERPRINT)
    store.commit(notes, new_messages=[ChatMessage(role="user", content="Buy oat milk.")], state=None)
    return tmp_path / "home"


def test_export_writes_one_archive_without_a_model(home, tmp_path):
    out = tmp_path / "ada.zip"
    result = invoke("export", "--user", "ada", "--out", str(out), "--home", str(home), "--no-textlog")
    assert result.exit_code == 0, result.output
    assert "exported 2 session(s), 4 messages" in result.output and str(out) in result.output.replace("\n", "")
    first = out.read_bytes()
    result = invoke("export", "--user", "ada", "--session", "trip", "--out", str(tmp_path / "trip.zip"),
                    "--home", str(home), "--no-textlog", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["sessions"] == ["ada/trip"] and report["messages"] == 3 and report["state_sha256"]["ada/trip"]
    invoke("export", "--user", "ada", "--out", str(out), "--home", str(home), "--no-textlog")
    assert out.read_bytes() == first  # the same memory, the same bytes


def test_export_and_import_errors_are_one_line(home, tmp_path):
    line = one_line_error(invoke("export", "--user", "nobody", "--out", str(tmp_path / "x.zip"), "--home", str(home)))
    assert "user 'nobody' has no sessions" in line and not (tmp_path / "x.zip").exists()
    line = one_line_error(invoke("export", "--user", "ada", "--session", "nope", "--out", str(tmp_path / "x.zip"),
                                 "--home", str(home)))
    assert "no session ada/nope" in line
    assert "no archive at" in one_line_error(invoke("import", str(tmp_path / "missing.zip"), "--home", str(tmp_path / "t")))


def test_import_refuses_damage_and_existing_sessions_before_loading_a_model(home, tmp_path):
    out = tmp_path / "ada.zip"
    assert invoke("export", "--user", "ada", "--out", str(out), "--home", str(home), "--no-textlog").exit_code == 0
    target = tmp_path / "target"
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(out.read_bytes()[:-100])
    line = one_line_error(invoke("import", str(truncated), "--home", str(target)))
    assert "not a readable zip archive" in line and "nothing was imported" in line
    assert DirectorySessionStore(target).list() == []
    # an import onto existing sessions: refused without --force (here: back into the same store)
    line = one_line_error(invoke("import", str(out), "--home", str(home)))
    assert "ada/notes, ada/trip already exist" in line and "--force" in line


@pytest.mark.smollm2
def test_import_refuses_another_model_then_replays_and_moves_byte_for_byte(home, tmp_path):
    archive = tmp_path / "ada.zip"
    assert invoke("export", "--user", "ada", "--out", str(archive), "--home", str(home), "--no-textlog").exit_code == 0
    second = tmp_path / "second"
    common = ("--adapter", "none", "--device", "cpu", "--no-textlog")
    line = one_line_error(invoke("import", str(archive), "--home", str(second), *common))
    assert "holds states for another model" in line and "--replay" in line
    assert DirectorySessionStore(second).list() == []

    result = invoke("import", str(archive), "--home", str(second), "--replay", "--json", *common)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["replayed"] and report["sessions"] == ["ada/notes", "ada/trip"] and report["messages"] == 4
    replayed = DirectorySessionStore(second).require(SessionKey(user_id="ada", session_id="trip"))
    assert [m.content for m in replayed.messages][-1] == "I am vegetarian." and replayed.state is not None
    assert replayed.metadata.extra == {"title": "Lisbon"} and replayed.fingerprint != FINGERPRINT

    moved = tmp_path / "moved.zip"
    assert invoke("export", "--user", "ada", "--out", str(moved), "--home", str(second), "--no-textlog").exit_code == 0
    third = tmp_path / "third"
    result = invoke("import", str(moved), "--home", str(third), *common)
    assert result.exit_code == 0 and "imported 2 session(s), 4 messages" in result.output, result.output
    again = tmp_path / "again.zip"
    assert invoke("export", "--user", "ada", "--out", str(again), "--home", str(third), "--no-textlog").exit_code == 0
    assert again.read_bytes() == moved.read_bytes()
    result = invoke("import", str(moved), "--home", str(third), "--force", *common)
    assert result.exit_code == 0, result.output
